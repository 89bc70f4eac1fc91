"""Sign-in throttling (django-axes): what a locked-out client is told.

Axes counts failures per user name and address; after AXES_FAILURE_LIMIT it refuses
that pair for AXES_COOLOFF_TIME, even with the right password.
"""

from __future__ import annotations

from axes.signals import user_locked_out
from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def lockout_minutes() -> int:
    return max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))


def lockout_message() -> str:
    return (
        f"Too many failed sign-in attempts. Signing in as this user from your address is "
        f"paused for {lockout_minutes()} minutes. Try again later, or reset your password."
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials=None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the sign-in page again, with the reason (429)."""
    retry_after = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    if request.path.startswith("/api/"):
        resp = JsonResponse({"error": lockout_message()}, status=429)
    else:
        username = (credentials or {}).get("username") or request.POST.get("username", "")
        resp = render(
            request,
            "registration/login.html",
            {
                "locked_out": lockout_message(),
                "username": username,
                "next": request.POST.get("next", ""),
            },
            status=429,
        )
    resp["Retry-After"] = retry_after
    return resp


@receiver(user_locked_out)
def refuse_api_sign_in(sender, request=None, **kwargs) -> None:
    """DRF wraps the request, so Axes' middleware never sees the lockout flag on the
    token endpoint: raise DRF's own 429 instead (Axes' documented DRF integration)."""
    from rest_framework.exceptions import Throttled
    from rest_framework.request import Request

    if isinstance(request, Request):
        raise Throttled(wait=settings.AXES_COOLOFF_TIME.total_seconds(), detail=lockout_message())
