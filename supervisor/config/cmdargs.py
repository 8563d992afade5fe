"""``GUNICORN_CMD_ARGS`` and gunicorn's spellings on our own command line.

Gunicorn reads extra command-line arguments from ``GUNICORN_CMD_ARGS``; a
deployment that sets it keeps working: gunicorn flags are translated to ours
(``-k``, ``-t``, ``--access-logfile``, ``-e``, ``--chdir``...), flags with no
meaning here are dropped and named in one warning line.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, MutableMapping, Sequence

from supervisor.config.gunicorn import (
    GUNICORN_CMD_ARGS,
    NEVER,
    SUPERVISOR_CMD_ARGS,
    export_env,
    parse_env,
    worker_class_settings,
)
from supervisor.config.model import option_name
from supervisor.errors import ConfigError

# GUNICORN_CMD_ARGS -------------------------------------------------------------------

_DROP_QUIETLY = {"--reuse-port": 0, "--no-sendfile": 0, "--threads": 1, "--worker-connections": 1}
_DROP_QUIETLY["--worker-tmp-dir"] = 1
_TRANSLATED = {"-k", "--worker-class", "-t", "--timeout", "--access-logfile", "-e", "--env"}
_TRANSLATED |= {"--asgi-loop", "--asgi-lifespan", "--fd"}
# uvicorn flags with no meaning here: refused in one line, with the reason.
REFUSED = {
    "--use-colors": "log lines are plain text or JSON (--log-format); colours are not supported",
}
_DROP_QUIETLY["--no-use-colors"] = 0  # what we do anyway


def _translated(flag: str, value: str, env: dict[str, str], notes: list[str]) -> list[str]:
    if flag in ("-k", "--worker-class"):
        out: list[str] = []
        for key, item in worker_class_settings(value).items():
            if isinstance(item, bool):
                out.append(option_name(key) if item else "--no-" + key.replace("_", "-"))
            else:
                out += [option_name(key), str(item)]
        return out
    if flag in ("-t", "--timeout"):
        return ["--timeout-worker", str(NEVER) if value.strip() in ("0", "0.0") else value]
    if flag == "--access-logfile":
        return ["--access-log", "--access-logfile", value]
    if flag == "--fd":
        return ["--bind", f"fd://{int(value)}"]
    if flag in ("-e", "--env"):
        env.update(parse_env(value))
        return []
    renamed = {"--asgi-loop": "--loop", "--asgi-lifespan": "--lifespan"}
    return [renamed[flag], value]


def _our_flags() -> dict[str, bool]:
    """Our command-line flags -> whether each takes a value."""
    from supervisor.config.model import BOOL_FIELDS  # noqa: PLC0415
    from supervisor.config.options import OPTIONS  # noqa: PLC0415

    flags = {"-c": True, "--config": True, "-h": False, "--help": False, "--version": False}
    for option in OPTIONS:
        flags.update(dict.fromkeys(option.flags, option.field not in BOOL_FIELDS))
        if option.negative:
            flags[option.negative] = False
    return flags


def translate_args(
    args: Sequence[str], *, source: str = GUNICORN_CMD_ARGS, strict: bool = False
) -> tuple[list[str], dict[str, str], list[str]]:
    """Gunicorn command-line arguments -> (our arguments, raw env, warnings).

    Our own flags pass through; gunicorn flags with another name here are
    translated; any other flag is dropped (with its value) and named, or with
    ``strict`` (the real command line) left for the parser to refuse.
    """
    ours = _our_flags()
    out: list[str] = []
    env: dict[str, str] = {}
    notes: list[str] = []
    dropped: list[str] = []
    pending = list(args)
    while pending:
        token = pending.pop(0)
        flag, sep, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if token[:2] in _TRANSLATED and len(token) > 2 and not token.startswith("--"):
            flag, sep, value = token[:2], "=", token[2:]  # -kuvicorn_worker.UvicornWorker
        if flag in REFUSED:
            raise ConfigError(f"{flag} is not supported: {REFUSED[flag]}.")
        quiet = flag in _DROP_QUIETLY and not (strict and flag in ours)
        special = flag in _TRANSLATED or quiet
        if not flag.startswith("-") or (flag in ours and not special) or (strict and not special):
            out.append(token)
            if ours.get(flag) and not sep and pending:
                out.append(pending.pop(0))
            continue
        wants_value = flag in _TRANSLATED or _DROP_QUIETLY.get(flag)
        if not sep and pending and (wants_value or not pending[0].startswith("-")):
            value = pending.pop(0)
        if flag in _TRANSLATED:
            try:
                out += _translated(flag, value, env, notes)
            except ValueError as exc:
                raise ConfigError(f"{source}: {flag} {value}: {exc}.") from exc
        elif not quiet:
            dropped.append(flag)
    if dropped:
        notes.insert(0, "ignoring options this supervisor does not support: " + ", ".join(dropped))
    return out, env, [f"{source}: {note}" for note in notes]


def gunicorn_argv(
    argv: Sequence[str], *, export: MutableMapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """The real command line with gunicorn's spellings (-k, --access-logfile, --chdir, -e)
    translated; unknown flags stay for the parser to refuse. Returns (arguments, warnings)."""
    args, env, warnings = translate_args(argv, source="command line", strict=True)
    export_env(env, export)
    return args, warnings


def cmd_args(
    environ: Mapping[str, str], *, export: MutableMapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Extra arguments from SUPERVISOR_CMD_ARGS, else from GUNICORN_CMD_ARGS (translated).

    Returns (arguments, warnings); ``-e KEY=VALUE`` from GUNICORN_CMD_ARGS is
    exported to ``export`` (os.environ) unless the variable is already set.
    """
    if SUPERVISOR_CMD_ARGS in environ or GUNICORN_CMD_ARGS not in environ:
        return shlex.split(environ.get(SUPERVISOR_CMD_ARGS, "")), []
    args, env, warnings = translate_args(shlex.split(environ[GUNICORN_CMD_ARGS]))
    export_env(env, export)
    note = f"Using {GUNICORN_CMD_ARGS} (set {SUPERVISOR_CMD_ARGS} to override it): {' '.join(args)}"
    return args, [note, *warnings]
