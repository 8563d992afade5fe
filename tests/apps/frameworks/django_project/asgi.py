"""The project's asgi.py, as ``startproject`` writes it."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.frameworks.django_project.settings")

application = get_asgi_application()
