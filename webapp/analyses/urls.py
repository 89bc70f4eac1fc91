from __future__ import annotations

from django.urls import path

from webapp.analyses import views

app_name = "analyses"
urlpatterns = [
    path("", views.history, name="list"),
    path("analyses/new/", views.upload, name="upload"),
    path("analyses/<uuid:pk>/", views.detail, name="detail"),
    path("analyses/<uuid:pk>/state/", views.state, name="state"),
    path("analyses/<uuid:pk>/video/", views.video, name="video"),
    path("analyses/<uuid:pk>/original/", views.original, name="original"),
    path("analyses/<uuid:pk>/report.json", views.report, name="report"),
    path("analyses/<uuid:pk>/delete/", views.delete, name="delete"),
    path("analyses/<uuid:pk>/cancel/", views.cancel, name="cancel"),
    path("analyses/<uuid:pk>/rerun/", views.rerun, name="rerun"),
    path("analyses/<uuid:pk>/label/", views.label, name="label"),
    path("analyses/<uuid:pk>/thumbnail.jpg", views.thumbnail, name="thumbnail"),
    path("analyses/<uuid:pk>/faces/<int:track_id>.jpg", views.track_crops, name="track_crops"),
]
