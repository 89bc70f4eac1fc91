from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from rest_framework.authtoken.models import Token

from webapp.accounts.forms import SignupForm


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("analyses:list")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        # Named: with Axes in front there are two backends, and Axes' does not sign in.
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("analyses:list")
    return render(request, "accounts/signup.html", {"form": form})


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    new_token = None
    if request.method == "POST":
        action = request.POST.get("action")
        Token.objects.filter(user=request.user).delete()
        if action == "create":
            new_token = Token.objects.create(user=request.user).key
        return render(
            request, "accounts/profile.html", {"has_token": bool(new_token), "new_token": new_token}
        )
    has_token = Token.objects.filter(user=request.user).exists()
    return render(request, "accounts/profile.html", {"has_token": has_token, "new_token": None})
