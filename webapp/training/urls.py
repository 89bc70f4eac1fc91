from __future__ import annotations

from django.urls import path

from webapp.training import views

app_name = "training"
urlpatterns = [
    path("", views.models_page, name="models"),
]
