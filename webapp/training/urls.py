from __future__ import annotations

from django.urls import path

from webapp.training import views

app_name = "training"
urlpatterns = [
    path("", views.models_page, name="models"),
    path("retrain/", views.retrain, name="retrain"),
    path("rollback/", views.rollback, name="rollback"),
    path("<int:pk>/promote/", views.promote, name="promote"),
    path("runs/<int:pk>/", views.run_page, name="run"),
    path("runs/<int:pk>/cancel/", views.cancel, name="cancel"),
]
