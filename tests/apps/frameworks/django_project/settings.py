"""Production-shaped settings with Django's default logging (no LOGGING setting)."""

from __future__ import annotations

import os

SECRET_KEY = "test-only-not-a-secret"  # a test project: nothing is signed that matters
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"  # default logging prints django.* when True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.apps.frameworks.django_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, object] = {}
USE_TZ = True
