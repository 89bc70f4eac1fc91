"""Create the first staff account from VERITY_ADMIN_* env vars, a prompt, or a
generated password, and say how to sign in."""

from __future__ import annotations

import getpass
import os
import secrets
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Ensure a staff account exists (VERITY_ADMIN_USERNAME / VERITY_ADMIN_PASSWORD / VERITY_ADMIN_EMAIL)."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        if User.objects.filter(is_staff=True).exists():
            names = ", ".join(
                User.objects.filter(is_staff=True).values_list("username", flat=True)[:3]
            )
            self.stdout.write(
                f"Staff account(s) exist: {names}. Sign in at http://127.0.0.1:8000/accounts/login/"
            )
            return
        username = os.environ.get("VERITY_ADMIN_USERNAME", "admin")
        password = os.environ.get("VERITY_ADMIN_PASSWORD", "")
        email = os.environ.get("VERITY_ADMIN_EMAIL", "")
        generated = False
        if not password and sys.stdin.isatty():
            self.stdout.write(
                "No staff account yet. Create one (or set VERITY_ADMIN_USERNAME / VERITY_ADMIN_PASSWORD)."
            )
            username = input(f"Username [{username}]: ").strip() or username
            while not password:
                password = getpass.getpass("Password: ")
        if not password:
            password = secrets.token_urlsafe(12)
            generated = True
        User.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"Created staff account {username!r}."))
        if generated:
            self.stdout.write(f"  Generated password (shown once): {password}")
        self.stdout.write("Sign in at http://127.0.0.1:8000/accounts/login/")
