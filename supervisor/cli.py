"""``python -m supervisor``: run an app, or talk to a running supervisor (status, scale,
reload, stop).

This module imports little at the top on purpose: :func:`main` must make
signals harmless (:mod:`supervisor.system.early_signals`) before the tens of
milliseconds that the configuration and runner imports take.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from supervisor.errors import AppLoadError, ConfigError
from supervisor.system import early_signals

CLIENT_COMMANDS = frozenset({"status", "scale", "reload", "stop", "top"})


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # First of all: a SIGHUP or SIGTERM sent right after start must not kill us.
    early_signals.install()
    args = list(sys.argv[1:] if argv is None else argv)
    from supervisor.system import clash  # noqa: PLC0415 - after the signals are safe

    mixed = clash.check_here()
    if mixed:
        sys.stderr.write(f"supervisor: error: {mixed}\n")
        sys.exit(2)
    if args[:1] and args[0] in CLIENT_COMMANDS:
        from supervisor.commands import client as control_client  # noqa: PLC0415

        early_signals.uninstall()  # a client is killed by Ctrl-C like any command
        sys.exit(control_client.COMMANDS[args[0]](args[1:]))
    # Some 350 modules come in now: the collector would walk their fresh objects dozens
    # of times and find no garbage (~20 ms of the start here). On again once they are in.
    gc.disable()
    try:
        from supervisor.arbiter.runner import exit_process, run_config  # noqa: PLC0415
        from supervisor.config import make_config  # noqa: PLC0415
        from supervisor.config.cli import parse  # noqa: PLC0415

        invocation = parse(args, os.environ)
        config = make_config(invocation.settings)
        gc.enable()
        if invocation.action == "print":
            from supervisor.config import report  # noqa: PLC0415

            sys.stdout.write(report.render(report.sources(config, invocation.layers)) + "\n")
            sys.exit(0)
        if not config.app:
            raise ConfigError('Give the app to run, e.g. "python -m supervisor app.main:app".')
        if invocation.action == "check":
            from supervisor.config import report  # noqa: PLC0415

            sys.stdout.write(report.check(config) + "\n")
            sys.exit(0)
        code = run_config(config, invocation=invocation)
    except (ConfigError, AppLoadError) as exc:
        sys.stderr.write(f"supervisor: error: {exc}\n")
        sys.exit(exc.exit_code)
    exit_process(code)
