"""The new options reach the Config from the command line and the environment."""

from __future__ import annotations

from supervisor.config import make_config
from supervisor.config.cli import parse


def test_allow_many_workers_flag_and_env() -> None:
    assert make_config(parse(["m:a"], {}).settings).allow_many_workers is False
    assert make_config(parse(["m:a", "--allow-many-workers"], {}).settings).allow_many_workers
    environ = {"SUPERVISOR_ALLOW_MANY_WORKERS": "1"}
    assert make_config(parse(["m:a"], environ).settings).allow_many_workers
