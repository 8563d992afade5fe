"""Importing the app in a worker (or once in the supervisor with --preload)."""

from __future__ import annotations

import importlib
import traceback
from typing import Any

from supervisor.config import Config


class AppLoadFailure(Exception):
    """The app could not be imported; the message is for the supervisor to show once."""


def load_app(config: Config) -> Any:
    """Import APP ("module:attr"), calling it first with --factory.

    A missing module or attribute is the user's typo: one line naming the
    part that is wrong. An exception raised while importing is the app's bug:
    its traceback, shown once by the supervisor.
    """
    module_name, _, attrs = config.app.partition(":")
    if not module_name or not attrs:
        raise AppLoadFailure(f'APP must be "module:attribute", got {config.app!r}.')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and _is_parent_or_self(exc.name, module_name):
            raise AppLoadFailure(f'Could not import module "{module_name}".') from exc
        raise AppLoadFailure(_import_traceback(config.app, exc)) from exc
    except BaseException as exc:
        raise AppLoadFailure(_import_traceback(config.app, exc)) from exc
    app: Any = module
    for attr in attrs.split("."):
        try:
            app = getattr(app, attr)
        except AttributeError:
            raise AppLoadFailure(
                f'Attribute "{attrs}" not found in module "{module_name}".'
            ) from None
    if config.factory:
        try:
            app = app()
        except BaseException as exc:
            text = "".join(traceback.format_exception(exc)).rstrip()
            raise AppLoadFailure(f"Error calling the app factory {config.app!r}:\n{text}") from exc
    return app


def _is_parent_or_self(missing: str, module_name: str) -> bool:
    return module_name == missing or module_name.startswith(missing + ".")


def _import_traceback(app: str, exc: BaseException) -> str:
    """The traceback from the app's own frames: importlib's machinery and this
    module say nothing the user can act on, and a SyntaxError keeps its file,
    line and caret."""
    error = traceback.TracebackException.from_exception(exc)
    error.stack = traceback.StackSummary.from_list(
        [
            frame
            for frame in error.stack
            if not frame.filename.startswith("<frozen importlib")
            and frame.filename not in (__file__, importlib.__file__)
        ]
    )
    text = "".join(error.format()).rstrip()
    return f"Error importing APP {app!r}:\n{text}"
