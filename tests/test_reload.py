"""The pure parts of --reload: what is watched, when to warn."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import make_config
from supervisor.system.watch import is_watched, warnings_for


@pytest.mark.parametrize(
    ("path", "includes", "excludes", "expected"),
    [
        ("/src/app/main.py", [], [], True),
        ("/src/app/README.md", [], [], False),
        ("/src/.venv/lib/site.py", [], [], False),
        ("/src/app/__pycache__/main.cpython-311.pyc", [], [], False),
        ("/src/node_modules/x.py", [], [], False),
        ("/src/.git/hooks/pre-commit.py", [], [], False),
        ("/src/app/templates/index.html", ["*.py", "*.html"], [], True),
        ("/src/app/test_main.py", [], ["test_*.py"], False),
        ("/src/generated/models.py", [], ["generated"], False),
    ],
)
def test_is_watched(path: str, includes: list[str], excludes: list[str], expected: bool) -> None:
    assert is_watched(Path(path), includes, excludes) is expected


def test_reload_warns_with_preload_and_many_workers() -> None:
    quiet = make_config({"app": "a:b", "reload": True, "workers": 2})
    assert warnings_for(quiet) == []
    loud = make_config({"app": "a:b", "reload": True, "workers": 8, "preload": True})
    notes = warnings_for(loud)
    assert len(notes) == 2
    assert any("--preload" in note for note in notes)
    assert any("8 workers" in note for note in notes)
