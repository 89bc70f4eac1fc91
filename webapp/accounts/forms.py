from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm


class SignupForm(UserCreationForm):
    # Optional, but the only way to reset a forgotten password.
    email = forms.EmailField(
        required=False,
        help_text="Optional: needed to reset a forgotten password.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")
