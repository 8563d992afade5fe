"""A mixed install with supervisord's 'supervisor' package is named, with the fix."""

from __future__ import annotations

from pathlib import Path

from supervisor.system.clash import check_here, describe


def test_our_own_package_alone_is_fine(tmp_path: Path) -> None:
    (tmp_path / "cli.py").write_text("")
    assert describe(tmp_path, ["asgi-supervisor", "uvicorn"]) is None


def test_supervisord_files_in_the_package_are_named(tmp_path: Path) -> None:
    (tmp_path / "supervisord.py").write_text("")
    said = describe(tmp_path, ["asgi-supervisor"])
    assert said is not None and "supervisord.py" in said and "pip uninstall" in said


def test_the_supervisord_distribution_is_named(tmp_path: Path) -> None:
    said = describe(tmp_path, ["Supervisor", "asgi-supervisor"])
    assert said is not None and "is installed" in said


def test_this_environment_is_clean() -> None:
    assert check_here() is None
