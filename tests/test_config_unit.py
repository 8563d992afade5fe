"""Config validation, sizes, bind parsing and layer merging: pure, no processes."""

from __future__ import annotations

import pytest

from supervisor.channel import (
    BootFailure,
    Heartbeat,
    Ready,
    WorkerChannel,
    make_pair,
    read_messages,
)
from supervisor.config import Config, format_size, make_config, parse_size, replace
from supervisor.config.cli import env_settings, merge_settings, parse
from supervisor.errors import ConfigError
from supervisor.system.sockets import BindSpec, bind_specs, parse_bind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * 1024**2),
        ("1G", 1024**3),
        ("300MB", 300 * 1000**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("4096", 4096),
        ("2 GiB", 2 * 1024**3),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "12XB", "-5M", "1.2.3G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512 * 1024**2) == "512.0 MiB"
    assert format_size(100) == "100 B"


def test_bad_size_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--max-memory: "):
        make_config({"max_memory": "a lot"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": "0"}, "--workers"),
        ({"port": "70000"}, "--port"),
        ({"app": "no_colon"}, 'APP must be "module:attribute"'),
        ({"max_requests_jitter": 5}, "--max-requests-jitter needs --max-requests"),
        ({"log_level": "loud"}, "--log-level"),
        ({"instance_header": "bad header"}, "--instance-header"),
        ({"nonsense": 1}, 'Unknown setting "nonsense"'),
    ],
)
def test_invalid_settings_are_one_clear_error(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(values)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_strings_from_the_environment_are_coerced() -> None:
    config = make_config(
        {"workers": "3", "max_requests": "100", "preload": "true", "bind": "a:1, b:2"}
    )
    assert (config.workers, config.max_requests, config.preload) == (3, 100, True)
    assert config.bind == ["a:1", "b:2"]


def test_replace_validates_again() -> None:
    config = make_config({"workers": 2})
    assert replace(config, workers=5).workers == 5
    with pytest.raises(ConfigError):
        replace(config, workers=0)


def test_lifetime_jitter_defaults_to_a_tenth() -> None:
    assert make_config({"max_lifetime": 600}).lifetime_jitter == 60
    assert make_config({"max_lifetime": 600, "max_lifetime_jitter": 5}).lifetime_jitter == 5


def test_merge_layers_later_wins_and_none_is_absent() -> None:
    merged = merge_settings({"workers": 2, "port": 1}, {"workers": 3}, {"port": None})
    assert merged == {"workers": 3, "port": 1}


def test_precedence_cli_over_env_over_file(tmp_path: object) -> None:
    environ = {"SUPERVISOR_WORKERS": "3", "SUPERVISOR_MAX_REQUESTS": "50"}
    assert env_settings(environ)["workers"] == "3"
    invocation = parse(["app:app", "--workers", "5"], environ)
    config = make_config(invocation.settings)
    assert config.workers == 5
    assert config.max_requests == 50


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("127.0.0.1:8000", BindSpec("tcp", host="127.0.0.1", port=8000)),
        ("[::1]:9000", BindSpec("tcp", host="::1", port=9000)),
        (":8080", BindSpec("tcp", host="0.0.0.0", port=8080)),
        ("unix:/tmp/x.sock", BindSpec("unix", path="/tmp/x.sock")),
        ("fd://3", BindSpec("fd", fd=3)),
    ],
)
def test_parse_bind(text: str, spec: BindSpec) -> None:
    assert parse_bind(text) == spec


@pytest.mark.parametrize("text", ["unix:", "fd://x", "host:http", "host:99999"])
def test_parse_bind_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--bind"):
        parse_bind(text)


def test_bind_specs_default_and_systemd() -> None:
    assert bind_specs([], "127.0.0.1", 8000, None, {}) == [BindSpec("tcp", "127.0.0.1", 8000)]
    import os

    systemd = bind_specs([], "h", 1, None, {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid())})
    assert systemd == [BindSpec("fd", fd=3), BindSpec("fd", fd=4)]
    assert bind_specs([], "h", 1, None, {"LISTEN_FDS": "2", "LISTEN_PID": "1"}) == [
        BindSpec("tcp", "h", 1)
    ]


def test_channel_round_trip_and_eof() -> None:
    parent, child = make_pair()
    channel = WorkerChannel(child)
    sent = [
        Ready(boot_ms=1.5),
        Heartbeat(requests=3, in_flight=1, connections=2, stats={"responses_2xx": 3.0}),
        BootFailure(exit_code=4, message="boom"),
    ]
    for message in sent:
        assert channel.send(message)
    messages, eof = read_messages(parent)
    assert messages == sent and not eof
    channel.close()
    assert read_messages(parent) == ([], True)
    parent.close()


def test_default_config_is_valid() -> None:
    assert Config().workers == 1
