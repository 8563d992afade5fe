from __future__ import annotations

from django.urls import path

from tests.apps.frameworks.django_project import views

urlpatterns = [
    path("", views.index),
    path("async", views.async_index),
    path("log", views.log_view),
    path("missing", views.missing),
    path("forbidden", views.forbidden),
    path("boom", views.boom),
]
