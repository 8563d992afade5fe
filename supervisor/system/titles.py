"""Process titles, as gunicorn shows them: what each process is, in ``ps`` and ``top``.

``supervisor: master [NAME]`` and ``supervisor: worker N [NAME]`` (N: the worker's
spawn number, gunicorn's ``worker.age``), with the state appended while it drains.
NAME is ``--proc-name`` (gunicorn's ``proc_name``) or the APP. Without setproctitle
installed the titles stay the command line, as under gunicorn.
"""

from __future__ import annotations

from supervisor.config import Config

PREFIX = "supervisor"
_name = ""


def title(role: str, name: str, number: int | None = None, state: str | None = None) -> str:
    """The title text: ``supervisor: worker 2 [app.main:app] (draining)``."""
    who = role if number is None else f"{role} {number}"
    return f"{PREFIX}: {who} [{name}]" + (f" ({state})" if state else "")


def name_of(config: Config) -> str:
    return config.proc_name or config.app


def set_title(role: str, config: Config, number: int | None = None) -> None:
    """Title this process; remembered so that a later state change keeps the rest."""
    global _name, _role, _number
    _name, _role, _number = name_of(config), role, number
    _apply(title(role, _name, number))


def set_state(state: str | None) -> None:
    """Append a state (``draining``, ``stopping``) to this process's title."""
    if _name:
        _apply(title(_role, _name, _number, state))


_role = "master"
_number: int | None = None


def _apply(text: str) -> None:
    try:
        import setproctitle  # noqa: PLC0415 - optional at import time, a runtime dependency
    except ImportError:
        return
    setproctitle.setproctitle(text)
