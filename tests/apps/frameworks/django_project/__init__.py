"""A Django project as ``django-admin startproject`` lays one out, served through ASGI.

``settings`` keeps Django's default logging (no ``LOGGING``); ``settings_logging``
adds the kind of ``LOGGING`` dict projects copy from Django's docs (a console
handler on the root logger, ``django`` and ``uvicorn.access`` loggers of its own).
"""
