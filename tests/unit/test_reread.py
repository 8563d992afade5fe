"""What a re-read configuration changes at SIGHUP, without processes."""

from __future__ import annotations

from supervisor.config import make_config
from supervisor.config.reread import plan


def test_settings_for_new_workers_apply_and_start_up_ones_keep_their_value() -> None:
    running = make_config({"app": "a:app", "workers": 2, "instance_id": "host-1"})
    reread = make_config(
        {
            "app": "a:app",
            "workers": 4,
            "max_requests": 100,
            "log_level": "debug",
            "bind": ["127.0.0.1:9000"],
            "preload": True,
        }
    )
    result = plan(running, reread)
    assert [field for field, _, _ in result.applied] == ["workers", "max_requests", "log_level"]
    assert result.ignored == ("bind", "preload")
    assert result.describe_ignored() == "--bind, --preload"
    assert "--workers 2 -> 4" in result.describe_applied()
    config = result.config
    assert (config.workers, config.max_requests, config.log_level) == (4, 100, "debug")
    assert (config.bind, config.preload) == ([], False)
    assert config.instance_id == "host-1"  # the default filled in at start stays


def test_nothing_changed_is_an_empty_plan_and_a_preloaded_app_stays() -> None:
    running = make_config({"app": "a:app", "preload": True, "instance_id": "x"})
    assert plan(running, make_config({"app": "a:app", "preload": True})).applied == ()
    moved = plan(running, make_config({"app": "b:app", "preload": True}))
    assert moved.ignored == ("app",) and moved.config.app == "a:app"
    unpreloaded = make_config({"app": "a:app", "instance_id": "x"})
    assert plan(unpreloaded, make_config({"app": "b:app"})).config.app == "b:app"
