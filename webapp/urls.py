from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from webapp.api.health import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    path("accounts/", include("webapp.accounts.urls")),
    path("api/", include("webapp.api.urls")),
    path("staff/models/", include("webapp.training.urls")),
    path("", include("webapp.analyses.urls")),
]
