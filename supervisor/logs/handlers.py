"""Installing logging in the supervisor and in each worker, and keeping it true after the app.

One handler on the root logger writes every record (the supervisor's,
uvicorn's, the app's, its framework's) through a :class:`LineSink`. Apps
reconfigure logging behind our back, at import (Django's ``setup()`` runs
``dictConfig``) or at startup, so after the app has loaded and after its
lifespan has started the worker calls :func:`adopt_app_logging`:

- loggers of ours and uvicorn's that a ``dictConfig`` disabled are enabled again;
- handlers the app attached that write to the console (stdout/stderr) are
  wrapped: in JSON mode they write our JSON instead of their text, and a
  record one of them wrote is not written a second time by our root handler
  (each record comes out once);
- when the app replaced the root handlers with something we cannot wrap
  (Litestar's queue handler), one warning says so and how to fix it.

``--log-config FILE`` (dictConfig as JSON or YAML, or a fileConfig .ini, as
uvicorn takes it) hands logging to the user: no handler of ours is installed.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

import msgspec

from supervisor.errors import ConfigError
from supervisor.logs.formats import JsonFormatter, TextFormatter
from supervisor.logs.sink import LineSink

TRACE = 5
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
OWN_LOGGERS = ("supervisor", "uvicorn", "uvicorn.error", "uvicorn.asgi")
SEEN = "_supervisor_written"  # set on a record an adopted console handler already wrote

logger = logging.getLogger("supervisor")


class SinkHandler(logging.Handler):
    """Formats a record and writes it through a sink at once, after queued access lines."""

    def __init__(self, sink: LineSink, formatter: logging.Formatter, *, skip_seen: bool) -> None:
        super().__init__()
        self.sink = sink
        self.skip_seen = skip_seen
        self.setFormatter(formatter)

    def handle(self, record: logging.LogRecord) -> bool:
        if self.skip_seen and getattr(record, SEEN, False):
            return False
        return bool(super().handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a formatter bug must not lose the record
            text = f"{record.levelname} {record.name}: {record.msg!r} {record.args!r}"
        self.sink.write_now(text.encode("utf-8", "replace") + b"\n")


class AdoptedHandler(logging.Handler):
    """An app's console handler: its level and filters, our format, our sink; marks records."""

    def __init__(self, original: logging.Handler, ours: SinkHandler, keep_format: bool) -> None:
        super().__init__(original.level)
        self.original = original
        self.ours = ours
        self.keep_format = keep_format
        self.filters = list(original.filters)

    def emit(self, record: logging.LogRecord) -> None:
        setattr(record, SEEN, True)
        formatter = self.original.formatter if self.keep_format else None
        try:
            text = (formatter or self.ours.formatter or logging.Formatter()).format(record)
        except Exception:
            text = f"{record.levelname} {record.name}: {record.msg!r} {record.args!r}"
        self.ours.sink.write_now(text.encode("utf-8", "replace") + b"\n")


class LogState(msgspec.Struct):
    """What this process installed; inherited by forked workers."""

    json: bool = False
    instance: str = ""
    text_instance: bool = False  # a chosen --instance-id also goes on every text line
    user_config: bool = False
    user_source: str | dict[str, Any] | None = None  # re-applied in each worker after fork
    main: LineSink | None = None
    access: LineSink | None = None
    files: dict[str, LineSink] = msgspec.field(default_factory=dict)
    handler: SinkHandler | None = None
    warned_root: bool = False


state = LogState()


def open_sinks(log_file: str | None, access_file: str | None) -> tuple[LineSink, LineSink]:
    """The main sink (stderr or --log-file) and the access sink (the main one unless given)."""
    main = _file_sink(log_file) if log_file and log_file != "-" else LineSink.for_fd(2, "stderr")
    if not access_file:
        return main, main
    if access_file == "-":
        return main, LineSink.for_fd(1, "stdout", report_fd=main.fd)
    return main, _file_sink(access_file)


def _file_sink(path: str) -> LineSink:
    existing = state.files.get(path)
    if existing is not None:
        return existing
    try:
        sink = LineSink.for_path(path)
    except OSError as exc:
        raise ConfigError(f"Cannot open log file {path} ({exc.strerror or exc}).") from exc
    state.files[path] = sink
    return sink


def install(
    *,
    level: str,
    json_format: bool,
    instance: str,
    text_instance: bool,
    log_file: str | None,
    access_file: str | None,
    log_config: str | dict[str, Any] | None,
) -> None:
    """Set up logging for this process (the supervisor, before any fork)."""
    logging.addLevelName(TRACE, "TRACE")
    state.json = json_format
    state.instance = instance
    state.text_instance = text_instance
    state.main, state.access = open_sinks(log_file, access_file)
    state.user_config = log_config is not None
    state.user_source = log_config
    root = logging.getLogger()
    if log_config is not None:
        apply_log_config(log_config)
        state.handler = None
    else:
        formatter = (
            JsonFormatter(instance)
            if json_format
            else TextFormatter(instance if text_instance else "")
        )
        state.handler = SinkHandler(state.main, formatter, skip_seen=True)
        for sink in sinks():
            sink.stall_note = _stall_note
        adopt_from_now_on()
        # Replace without closing: the old handlers' streams are not ours to close.
        root.handlers = [state.handler]
        root.setLevel(LEVELS[level])
        for name in OWN_LOGGERS:
            own = logging.getLogger(name)
            own.handlers = []
            own.propagate = True
    # Access lines are written by the worker's protocol, never by uvicorn's access
    # logger: whatever an app's dictConfig does to "uvicorn.access", a line comes out once.
    access = logging.getLogger("uvicorn.access")
    if not state.user_config:
        access.handlers = []
        access.propagate = False


def apply_log_config(source: str | dict[str, Any]) -> None:
    """``--log-config`` / gunicorn's ``logconfig_dict``: JSON, YAML, .ini or a dict."""
    if isinstance(source, dict):
        _dict_config(source, "logconfig_dict")
        return
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"--log-config {source}: no such file.")
    try:
        if path.suffix in (".json",):
            _dict_config(json.loads(path.read_text()), source)
        elif path.suffix in (".yaml", ".yml"):
            import yaml  # noqa: PLC0415 - only for YAML log configs, as with uvicorn

            _dict_config(yaml.safe_load(path.read_text()), source)
        else:
            logging.config.fileConfig(str(path), disable_existing_loggers=False)
    except ConfigError:
        raise
    except ImportError as exc:
        raise ConfigError(
            f"--log-config {source}: YAML needs PyYAML; install it (pip install pyyaml)."
        ) from exc
    except (OSError, ValueError, KeyError, TypeError, configparser.Error) as exc:
        raise ConfigError(f"--log-config {source}: {type(exc).__name__}: {exc}") from exc


def _dict_config(config: Any, where: str) -> None:
    if not isinstance(config, dict):
        raise ConfigError(f"--log-config {where}: expected a dictConfig mapping.")
    try:
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"--log-config {where}: {exc}") from exc


def after_fork() -> None:
    """In a new worker: our sinks forget the parent's state; a --log-config is applied
    again, so that its handlers open their files in this process (as uvicorn does)."""
    for sink in sinks():
        sink.after_fork()
    if state.user_source is not None:
        apply_log_config(state.user_source)


def _stall_note() -> bytes:
    record = logger.makeRecord(
        "supervisor",
        logging.WARNING,
        __file__,
        0,
        "Log output is not being read fast enough (a stalled log reader?): requests wait"
        " until it catches up, so that no line is lost",
        (),
        None,
    )
    handler = state.handler
    formatter = handler.formatter if handler is not None else None
    return ((formatter or logging.Formatter()).format(record) + "\n").encode("utf-8", "replace")


_original_add_handler = logging.Logger.addHandler


def _add_handler_and_adopt(self: logging.Logger, handler: logging.Handler) -> None:
    _original_add_handler(self, handler)
    ours = state.handler
    if ours is not None and not state.user_config and handler is not ours:
        _adopt_console_handlers(self, ours)


def adopt_from_now_on() -> None:
    """A console handler an app adds later (in its lifespan, on first use) is adopted the
    moment it is added, so no record it handles in between comes out in the wrong shape."""
    logging.Logger.addHandler = _add_handler_and_adopt  # type: ignore[method-assign,assignment]


def adopt_app_logging() -> None:
    """After the app configured logging (import, startup): one record, one line, our format."""
    if state.user_config or state.handler is None:
        return
    ours = state.handler
    manager = logging.Logger.manager
    for name, candidate in list(manager.loggerDict.items()):
        if not isinstance(candidate, logging.Logger):
            continue
        if candidate.disabled and name.split(".")[0] in ("supervisor", "uvicorn"):
            candidate.disabled = False
        _adopt_console_handlers(candidate, ours)
    root = logging.getLogger()
    _adopt_console_handlers(root, ours)
    if ours not in root.handlers and not state.warned_root:
        state.warned_root = True
        if not any(isinstance(h, AdoptedHandler) for h in root.handlers):
            names = ", ".join(type(h).__name__ for h in root.handlers) or "none"
            record = logger.makeRecord(
                logger.name,
                logging.WARNING,
                __file__,
                0,
                "The application replaced the root logger's handlers (%s): its records do not"
                " use --log-format; configure it to leave the root logger alone (Litestar:"
                ' LoggingConfig(configure_root_logger=False, loggers={"litestar":'
                ' {"propagate": True}})), or pass --log-config',
                (names,),
                None,
            )
            ours.handle(record)  # in our format, whatever the app put on the root logger


def _adopt_console_handlers(target: logging.Logger, ours: SinkHandler) -> None:
    handlers = target.handlers
    for index, handler in enumerate(list(handlers)):
        if handler is ours or isinstance(handler, AdoptedHandler):
            continue
        if _writes_to_console(handler):
            handlers[index] = AdoptedHandler(handler, ours, keep_format=not state.json)


def _writes_to_console(handler: logging.Handler) -> bool:
    if type(handler) is not logging.StreamHandler and not isinstance(
        handler, logging.StreamHandler
    ):
        return False
    if isinstance(handler, logging.FileHandler):
        return False
    stream = getattr(handler, "stream", None)
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    if stream in consoles:
        return True
    try:
        return stream is not None and stream.fileno() in (1, 2)
    except (AttributeError, OSError, ValueError):
        return False


def reopen() -> None:
    """SIGUSR1: reopen log files so logrotate can move them away."""
    for sink in state.files.values():
        sink.reopen()
    for candidate in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if not isinstance(candidate, logging.Logger):
            continue
        for handler in candidate.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()


def sinks() -> list[LineSink]:
    """Every sink of this process, once each."""
    found: list[LineSink] = []
    for sink in [state.main, state.access, *state.files.values()]:
        if sink is not None and all(sink is not other for other in found):
            found.append(sink)
    return found


def stall_stats() -> dict[str, float]:
    """How often, and how long, a slow log reader held this process up (for metrics)."""
    stalls = sum(sink.stalls for sink in sinks())
    if not stalls:
        return {}
    return {
        "log_stalls": float(stalls),
        "log_stalled_seconds": sum(sink.stalled_seconds for sink in sinks()),
    }


def flush_all() -> None:
    """Before this process exits: everything queued is written, waiting for the reader."""
    for sink in sinks():
        sink.loop = None  # the event loop is gone: nothing would come back for the rest
        sink.flush()


def sink_fds() -> set[int]:
    """Descriptors behind our sinks (a worker keeps them open across its fd clean-up)."""
    sinks = [state.main, state.access, *state.files.values()]
    return {sink.fd for sink in sinks if sink is not None}
