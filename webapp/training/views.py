"""Staff pages: model versions side by side, retraining, live progress, promotion."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.training import registry
from webapp.training.forms import RetrainForm
from webapp.training.models import ModelVersion, TrainingRun
from webapp.training.services import cancel_run, labelled_analyses, start_run


def staff_required(view: Callable) -> Callable:
    """Anonymous visitors are sent to sign in; signed-in non-staff get a plain 403
    (not the admin login, which would suggest they might get in with other details)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("Staff only.")
        return view(request, *args, **kwargs)

    return wrapper


@staff_required
def models_page(request: HttpRequest) -> HttpResponse:
    registry.ensure_registered()
    versions = ModelVersion.objects.select_related("parent", "created_by")
    return render(
        request,
        "training/models.html",
        {
            "versions": versions,
            "previous": registry.previous_version(),
            "runs": TrainingRun.objects.select_related("model_version", "created_by")[:10],
        },
    )


@staff_required
def retrain(request: HttpRequest) -> HttpResponse:
    registry.ensure_registered()
    if request.method == "POST":
        form = RetrainForm(request.POST)
        if form.is_valid():
            run = start_run(
                request.user, form.sources(), form.params(), form.cleaned_data["fine_tune_from"]
            )
            messages.success(request, f"Training run {run.id} is queued.")
            return redirect("training:run", pk=run.id)
    else:
        form = RetrainForm()
    labelled = labelled_analyses()
    return render(
        request,
        "training/retrain.html",
        {
            "form": form,
            "labelled": labelled[:50],
            "labelled_count": labelled.count(),
            "labelled_fake": labelled.filter(user_label="fake").count(),
            "labelled_real": labelled.filter(user_label="real").count(),
        },
    )


@staff_required
def run_page(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("model_version"), pk=pk)
    return render(request, "training/run.html", {"run": run, "state": run.state()})


@staff_required
@require_POST
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, pk=pk)
    if cancel_run(run, request.user):
        messages.success(request, f"Training run {run.id} is cancelled.")
    else:
        messages.error(request, f"Training run {run.id} is {run.status}; it cannot be cancelled.")
    return redirect("training:run", pk=run.id)


@staff_required
@require_POST
def promote(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        version = registry.promote(pk, request.user)
    except ModelVersion.DoesNotExist:
        messages.error(request, "No such version.")
    except registry.PromotionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Version {version.version} is now active.")
    return redirect("training:models")


@staff_required
@require_POST
def rollback(request: HttpRequest) -> HttpResponse:
    try:
        version = registry.rollback(request.user)
    except registry.PromotionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rolled back: version {version.version} is active again.")
    return redirect("training:models")
