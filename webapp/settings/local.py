from __future__ import annotations

from webapp.settings.base import *  # noqa: F403
from webapp.settings.base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
