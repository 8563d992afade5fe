"""Settings: ``FASTAGENTIC_*`` environment variables -> one validated msgspec Struct.

Every field ``name`` is read from ``FASTAGENTIC_<NAME>``; a few also answer to
the names the seed and common platforms use (``REDIS_URL``, ``DATABASE_URL``,
``OPENAI_API_KEY``, ...). An empty variable counts as unset. A bad value is a
``ConfigError`` whose message is one line naming the variable.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from app.errors import ConfigError
from app.identity import load_api_keys

ENV_PREFIX = "FASTAGENTIC_"
# Extra names a field is read from, after FASTAGENTIC_<NAME>, first found wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "redis_url": ("REDIS_URL",),
    "database_url": ("DATABASE_URL",),
    "timeout_graceful": ("FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN",),
    "instance_id": ("SUPERVISOR_INSTANCE_ID",),
    "workers": ("WEB_CONCURRENCY", "SUPERVISOR_WORKERS"),
    "llm_api_key": ("OPENAI_API_KEY",),
    # The servers' own trust list for X-Forwarded-For (uvicorn, gunicorn, the supervisor).
    "trusted_proxies": ("FORWARDED_ALLOW_IPS", "SUPERVISOR_FORWARDED_ALLOW_IPS"),
}
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d*)\s*(second|minute|hour|day)s?)?\s*$")
_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_FIELD_PATH = re.compile(r" - at `\$\.(\w+)`$")

PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
Identifier = Annotated[str, msgspec.Meta(pattern=_IDENTIFIER)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration of one worker. Defaults serve a fresh checkout."""

    title: Name = "FastAgentic Agent"
    instance_id: str = ""
    workers: PosInt | None = None  # only for the "connections = workers x pool" log line
    log_level: str = "info"
    client_name: Name = "fastagentic"  # Redis CLIENT SETNAME / Postgres application_name

    redis_url: str | None = None
    redis_pool_size: PosInt = 10
    redis_pool_timeout: PosFloat = 5.0
    redis_prefix: Name = "fastagentic"

    database_url: str | None = None
    db_pool_size: PosInt = 5
    db_max_overflow: NonNegInt = 10
    db_schema: Identifier = "public"
    db_connect_timeout: PosFloat = 5.0
    db_pool_recycle: PosFloat = 1800.0

    timeout_keep_alive: PosFloat = 5.0
    timeout_graceful: NonNegFloat = 30.0
    max_concurrent: PosInt | None = None
    max_body_size: PosInt = 1024 * 1024
    ready_timeout: PosFloat = 2.0

    rate_limit: str = "60/hour"
    api_keys: str | None = None  # [NAME:]SHA256 entries; see app/identity.py
    api_keys_file: str | None = None
    trusted_proxies: str = "127.0.0.1,::1"  # may send X-User-Id (uvicorn's default list)

    task_concurrency: PosInt = 4
    task_visibility_timeout: PosFloat = 30.0
    task_max_attempts: PosInt = 3
    task_retry_backoff: NonNegFloat = 0.5
    task_timeout: PosFloat = 300.0  # one attempt's limit; then it counts as failed
    result_ttl: PosInt = 86400

    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: Name = "gpt-4o-mini"
    llm_timeout: PosFloat = 60.0
    llm_max_tokens: PosInt = 256
    llm_fake_tokens: PosInt = 20
    llm_fake_token_latency: NonNegFloat = 0.02
    llm_breaker_threshold: PosInt = 5
    llm_breaker_reset: PosFloat = 30.0

    def __post_init__(self) -> None:
        _check_url("redis_url", self.redis_url, ("redis", "rediss", "unix"))
        _check_url(
            "database_url", self.database_url, ("postgres", "postgresql", "postgresql+asyncpg")
        )
        _check_url("llm_base_url", self.llm_base_url, ("http", "https"))
        parse_rate_limit(self.rate_limit)
        load_api_keys(self.api_keys, self.api_keys_file)
        if self.log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(
                f"{env_name('log_level')}={self.log_level!r}: use debug, info, warning or error."
            )

    @property
    def rate_limit_rule(self) -> tuple[int, int]:
        """(requests, window seconds); 0 requests means no limit."""
        return parse_rate_limit(self.rate_limit)

    @property
    def db_dsn(self) -> str | None:
        """The database URL as asyncpg wants it (SQLAlchemy's ``+asyncpg`` dropped)."""
        if self.database_url is None:
            return None
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def parse_rate_limit(text: str) -> tuple[int, int]:
    """``"60/hour"``, ``"100/minute"``, ``"10/30second"`` or ``"60"`` (per hour) -> (n, seconds)."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError(
            f'{env_name("rate_limit")}={text!r}: use "N/second", "N/minute", "N/hour",'
            ' "N/day" or "0" to turn the limit off.'
        )
    count, multiple, period = match.groups()
    seconds = PERIODS[period or "hour"] * int(multiple or 1)
    if seconds == 0:
        raise ValueError(f"{env_name('rate_limit')}={text!r}: the window must be longer than 0.")
    return int(count), seconds


def _check_url(field: str, url: str | None, schemes: tuple[str, ...]) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise ValueError(
            f"{env_name(field)}={redact(url)!r} is not a {' or '.join(schemes)} URL"
            f" (e.g. {schemes[0]}://127.0.0.1)."
        )


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def raw_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The non-empty settings present in ``environ``, keyed by field name."""
    values: dict[str, str] = {}
    for field in Settings.__struct_fields__:
        for name in (env_name(field), *ALIASES.get(field, ())):
            value = environ.get(name, "").strip()
            if value:
                values[field] = value
                break
    return values


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (``os.environ`` by default); raises ConfigError."""
    values: dict[str, Any] = raw_values(os.environ if environ is None else environ)
    values.update(overrides)
    if str(values.get("workers", "")).strip().lower() == "auto":
        values.pop("workers")  # the supervisor's own cgroup-derived count; only logged here
    if not values.get("instance_id"):
        values["instance_id"] = default_instance_id()
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), values)) from None


def default_instance_id() -> str:
    """hostname-<parent pid>: under a supervisor that is the supervisor's own default."""
    return f"{socket.gethostname()}-{os.getppid()}"


def _explain(message: str, values: Mapping[str, Any]) -> str:
    match = _FIELD_PATH.search(message)
    if match is None:
        return f"Invalid configuration: {message}"
    field = match.group(1)
    detail = message[: match.start()]
    value = values.get(field)
    shown = redact(value) if isinstance(value, str) else value
    return f"Invalid configuration: {env_name(field)}={shown!r}: {detail}."


def describe(settings: Settings) -> dict[str, Any]:
    """The settings safe to show on /metrics: URLs without passwords, no API key."""
    shown = msgspec.structs.asdict(settings)
    for field in ("redis_url", "database_url"):
        if shown[field]:
            shown[field] = redact(shown[field])
    shown["llm_api_key"] = "***" if settings.llm_api_key else None
    shown["api_keys"] = len(load_api_keys(settings.api_keys, settings.api_keys_file))
    return shown
