from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from webapp.training.models import ModelVersion


@staff_member_required
def models_page(request: HttpRequest) -> HttpResponse:
    return render(request, "training/models.html", {"versions": ModelVersion.objects.all()})
