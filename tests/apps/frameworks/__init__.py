"""Real framework apps the framework-logging end-to-end tests run under the supervisor.

Each is written as its framework's users write it (their logging set-up
included), so the tests see what a user sees: ``django_project`` (Django's
default logging, or a typical project ``LOGGING`` dict), ``fastapi_app``,
``starlette_app`` and ``litestar_app`` (Litestar's default logging config, and
the one-line fix).
"""
