from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from webapp.analyses.media import serve_file
from webapp.analyses.models import ACTIVE, VERDICT_LABELS, Analysis, Status, UserLabel
from webapp.analyses.submit import (
    MAX_MIN_FACE,
    create_analysis,
    delete_analysis,
    parse_min_face,
    rerun_analysis,
)
from webapp.analyses.validation import RejectedUpload
from webapp.live.publish import publish_analysis


def _own(request: HttpRequest, pk, rows: QuerySet[Analysis] | None = None) -> Analysis:
    # Another user's analysis is a 404, never a 403: its existence is not revealed.
    return get_object_or_404(
        Analysis.objects.all() if rows is None else rows, pk=pk, owner=request.user
    )


@login_required
def history(request: HttpRequest) -> HttpResponse:
    qs = Analysis.objects.filter(owner=request.user).defer("report")
    status = request.GET.get("status", "")
    verdict = request.GET.get("verdict", "")
    q = request.GET.get("q", "").strip()
    if status in Status.values:
        qs = qs.filter(status=status)
    if verdict:
        qs = qs.filter(verdict_label=verdict)
    if q:
        qs = qs.filter(original_name__icontains=q)
    page = Paginator(qs, 20).get_page(request.GET.get("page"))
    return render(
        request,
        "analyses/history.html",
        {
            "page": page,
            "status": status,
            "verdict": verdict,
            "q": q,
            "statuses": Status.choices,
            "verdict_choices": list(VERDICT_LABELS.items()),
        },
    )


@login_required
def upload(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        f = request.FILES.get("file")
        if f is None:
            messages.error(request, "Choose a video file to upload.")
        else:
            try:
                min_face = parse_min_face(request.POST.get("min_face"))
                analysis = create_analysis(request.user, f, min_face)
            except RejectedUpload as exc:
                if request.headers.get("Accept") == "application/json":
                    return JsonResponse({"error": str(exc)}, status=400)
                messages.error(request, str(exc))
            else:
                if request.headers.get("Accept") == "application/json":
                    return JsonResponse(
                        {"id": str(analysis.id), "url": f"/analyses/{analysis.id}/"}, status=201
                    )
                return redirect("analyses:detail", pk=analysis.id)
    return render(
        request,
        "analyses/upload.html",
        {
            "max_bytes": settings.VERITY_MAX_UPLOAD_BYTES,
            "max_mb": settings.VERITY_MAX_UPLOAD_BYTES // 1_000_000,
            "min_face": settings.VERITY_MIN_FACE,
            "max_min_face": MAX_MIN_FACE,
        },
    )


@login_required
def detail(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    return render(
        request,
        "analyses/detail.html",
        {
            "a": analysis,
            "state": analysis.state(),
        },
    )


@login_required
def state(request: HttpRequest, pk) -> JsonResponse:
    # An open result page without its WebSocket polls this every 2 s: leave the report
    # (every sampled frame's faces and scores) in the database.
    return JsonResponse(_own(request, pk, Analysis.objects.defer("report")).state())


@login_required
def video(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    if not analysis.annotated:
        return HttpResponse("The annotated video is not ready.", status=404)
    return serve_file(request, analysis.annotated, "video/mp4")


@login_required
def original(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    # Served as a download with a neutral type: an uploaded file is never rendered inline.
    return serve_file(
        request, analysis.original, "application/octet-stream", analysis.original_name
    )


@login_required
def report(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    if analysis.report is None:
        return JsonResponse({"error": "The report is not ready."}, status=404)
    resp = JsonResponse(analysis.report, json_dumps_params={"indent": 2})
    if request.GET.get("download"):
        resp["Content-Disposition"] = f'attachment; filename="verity-{analysis.id}.json"'
    return resp


@login_required
@require_POST
def delete(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    if analysis.status in ACTIVE:
        analysis.transition(
            ACTIVE, Status.CANCELLED, error="Deleted by its owner.", stage="cancelled"
        )
    delete_analysis(analysis)
    messages.success(request, "Analysis deleted.")
    return redirect("analyses:list")


@login_required
def thumbnail(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    if not analysis.thumbnail:
        return HttpResponse(status=404)
    return serve_file(request, analysis.thumbnail, "image/jpeg")


@login_required
def track_crops(request: HttpRequest, pk, track_id: int) -> HttpResponse:
    analysis = _own(request, pk)
    name = analysis.track_crop_name(track_id)
    if not default_storage.exists(name):
        return HttpResponse(status=404)
    return serve_file(request, name, "image/jpeg")


@login_required
@require_POST
def rerun(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    try:
        rerun_analysis(analysis)
    except RejectedUpload as exc:
        messages.error(request, str(exc))
    return redirect("analyses:detail", pk=analysis.id)


@login_required
@require_POST
def cancel(request: HttpRequest, pk) -> HttpResponse:
    analysis = _own(request, pk)
    if analysis.transition(
        ACTIVE, Status.CANCELLED, error="Cancelled by its owner.", stage="cancelled"
    ):
        publish_analysis(analysis)
        messages.success(request, "Analysis cancelled.")
    return redirect("analyses:detail", pk=analysis.id)


@login_required
@require_POST
def label(request: HttpRequest, pk) -> HttpResponse:
    """The owner records the truth about a finished clip; staff may train on it."""
    analysis = _own(request, pk)
    value = request.POST.get("label", "")
    if value not in ("", *UserLabel.values):
        return HttpResponse("The label must be real or fake.", status=400)
    if analysis.status != Status.DONE:
        messages.error(request, "Only a finished analysis can be labelled.")
        return redirect("analyses:detail", pk=analysis.id)
    Analysis.objects.filter(id=analysis.id).update(
        user_label=value, labelled_at=timezone.now() if value else None
    )
    if value:
        messages.success(request, f"Thank you: this clip is recorded as {value}.")
    else:
        messages.success(request, "Your label is removed.")
    return redirect("analyses:detail", pk=analysis.id)
