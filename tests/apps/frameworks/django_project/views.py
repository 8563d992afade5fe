"""Views that make ``django.request`` log what it logs in production: 404, 403, 500."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

log = logging.getLogger(__name__)


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def async_index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("async ok")


def log_view(request: HttpRequest) -> HttpResponse:
    log.info("django view says %s", "hi", extra={"user_id": 42, "request": request})
    return HttpResponse("logged")


def missing(request: HttpRequest) -> HttpResponse:
    raise Http404("no such thing")


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("django boom")
