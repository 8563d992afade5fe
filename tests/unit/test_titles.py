"""Process titles: gunicorn's shape, with our prefix, the worker number and the state."""

from __future__ import annotations

from supervisor.config import make_config
from supervisor.system.titles import name_of, title


def test_titles_read_like_gunicorns() -> None:
    assert title("master", "app.main:app") == "supervisor: master [app.main:app]"
    assert title("worker", "billing", 2) == "supervisor: worker 2 [billing]"
    assert title("worker", "billing", 2, "draining") == "supervisor: worker 2 [billing] (draining)"


def test_the_name_is_proc_name_or_the_app() -> None:
    assert name_of(make_config({"app": "m:a"})) == "m:a"
    assert name_of(make_config({"app": "m:a", "proc_name": "api"})) == "api"
