"""The supervisor's configuration: one typed, validated value built from any source.

Every source (command line, ``SUPERVISOR_*`` environment, gunicorn-style config
file, the Python API) produces a plain mapping of setting name -> raw value;
:func:`make_config` turns that into a :class:`Config` or raises one
:class:`~supervisor.errors.ConfigError` that names the option and says how to
fix it. All validation lives here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect

from supervisor.errors import ConfigError

ENV_PREFIX = "SUPERVISOR_"

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
# Bytes, written by users as "512MiB", "1G", "300MB" (see parse_size).
ByteSize = Annotated[int, msgspec.Meta(ge=0, extra={"size": True})]

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LogFormat = Literal["text", "json"]
Lifespan = Literal["auto", "on", "off"]

DEFAULT_HEALTH_PATHS = ("/health", "/ready", "/metrics")


class Config(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Everything the supervisor and its workers need to know, validated."""

    app: str = ""
    factory: bool = False
    app_dir: str = "."
    chdir: str | None = None  # gunicorn's: the working directory of supervisor and workers
    pythonpath: list[str] = msgspec.field(default_factory=list)

    workers: PosInt = 1
    allow_many_workers: bool = False
    host: str = "127.0.0.1"
    port: Port = 8000
    bind: list[str] = msgspec.field(default_factory=list)
    uds: str | None = None
    reuse_port: bool = False
    backlog: PosInt = 2048

    max_requests: NonNegInt = 0
    max_requests_jitter: NonNegInt = 0
    max_memory: ByteSize | None = None
    max_memory_total: ByteSize | None = None
    max_memory_hard: ByteSize | None = None
    max_lifetime: NonNegFloat = 0.0
    max_lifetime_jitter: NonNegFloat | None = None
    timeout_worker: PosFloat = 30.0
    timeout_boot: PosFloat = 60.0
    timeout_graceful: NonNegFloat = 30.0
    timeout_keep_alive: PosFloat = 5.0
    restart_batch: PosInt = 1
    preload: bool = False

    max_concurrent: PosInt | None = None
    instance_id: str | None = None
    instance_header: str = "X-Instance-Id"
    health_paths: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_HEALTH_PATHS))
    slow_request_ms: NonNegFloat | None = None
    metrics_bind: str | None = None
    metrics_path: str | None = None
    metrics_pid_label: bool = False
    control_socket: str | None = None

    reload: bool = False
    reload_dirs: list[str] = msgspec.field(default_factory=list)
    reload_includes: list[str] = msgspec.field(default_factory=list)
    reload_excludes: list[str] = msgspec.field(default_factory=list)
    reload_delay: NonNegFloat = 0.1

    pid: str | None = None
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    log_file: str | None = None
    log_config: str | None = None
    log_config_dict: dict[str, Any] | None = None  # gunicorn's logconfig_dict
    capture_output: bool = False  # gunicorn's: stdout/stderr into --log-file
    access_log: bool = True
    access_log_file: str | None = None
    access_log_format: str | None = None
    proxy_headers: bool = True
    forwarded_allow_ips: str | None = None
    root_path: str = ""
    loop: str = "auto"
    http: str = "auto"
    ws: str = "auto"
    lifespan: Lifespan = "auto"
    env_file: str | None = None
    server_header: bool = True
    date_header: bool = True
    proc_name: str | None = None  # process titles: "supervisor: master [NAME]"; [APP]
    # gunicorn's privilege drop: workers run as user/group; umask for unix sockets.
    user: str | None = None
    group: str | None = None
    umask: NonNegInt | None = None
    # TLS, uvicorn's names (gunicorn's certfile, keyfile, ca_certs, cert_reqs, ciphers).
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_version: int = 17  # ssl.PROTOCOL_TLS_SERVER, as uvicorn
    ssl_cert_reqs: NonNegInt = 0  # ssl.CERT_NONE
    ssl_ca_certs: str | None = None
    ssl_ciphers: str = "TLSv1"
    # uvicorn's, passed to every worker's uvicorn.Config.
    ws_max_size: PosInt = 16777216
    ws_max_queue: PosInt = 32
    ws_ping_interval: NonNegFloat | None = 20.0
    ws_ping_timeout: NonNegFloat | None = 20.0
    ws_per_message_deflate: bool = True
    interface: Literal["auto", "asgi3", "asgi2"] = "auto"
    headers: list[str] = msgspec.field(default_factory=list)  # "Name: Value"
    h11_max_incomplete_event_size: PosInt | None = None
    reset_contextvars: bool = False
    http2: bool = False
    # gunicorn's request limits (0 = unlimited): 414 / 431 before the app sees the request.
    limit_request_line: NonNegInt = 0
    limit_request_fields: NonNegInt = 0
    limit_request_field_size: NonNegInt = 0

    def __post_init__(self) -> None:
        if self.app and ":" not in self.app:
            raise ConfigError(
                f'APP must be "module:attribute" (for example "app.main:app"), got "{self.app}".'
            )
        if self.max_requests_jitter and not self.max_requests:
            raise ConfigError("--max-requests-jitter needs --max-requests to be set.")
        if self.max_lifetime_jitter and not self.max_lifetime:
            raise ConfigError("--max-lifetime-jitter needs --max-lifetime to be set.")
        for header in self.headers:
            name, sep, _ = header.partition(":")
            if not sep or not _HEADER_NAME.fullmatch(name.strip()):
                raise ConfigError(f'--header "{header}": use "Name: Value".')
        if self.http2 and self.http != "zttp":
            raise ConfigError("--http2 needs --http zttp (uvicorn serves HTTP/2 with zttp only).")
        if not self.instance_header or not _HEADER_NAME.fullmatch(self.instance_header):
            raise ConfigError(f'--instance-header "{self.instance_header}" is not a header name.')

    @property
    def lifetime_jitter(self) -> float:
        """Jitter for --max-lifetime; a tenth of it by default so workers age apart."""
        if self.max_lifetime_jitter is not None:
            return self.max_lifetime_jitter
        return self.max_lifetime / 10


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _field_kinds() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(boolean, list, byte-size) fields, read from Config's annotations: a new setting
    needs no entry in a list kept by hand."""
    bools: set[str] = set()
    lists: set[str] = set()
    sizes: set[str] = set()
    struct = msgspec.inspect.type_info(Config)
    assert isinstance(struct, msgspec.inspect.StructType)
    for info in struct.fields:
        kind = info.type
        members = kind.types if isinstance(kind, msgspec.inspect.UnionType) else (kind,)
        for member in members:
            if isinstance(member, msgspec.inspect.Metadata) and (member.extra or {}).get("size"):
                sizes.add(info.name)
            elif isinstance(member, msgspec.inspect.BoolType):
                bools.add(info.name)
            elif isinstance(member, msgspec.inspect.ListType):
                lists.add(info.name)
    return frozenset(bools), frozenset(lists), frozenset(sizes)


FIELD_NAMES: frozenset[str] = frozenset(Config.__struct_fields__)
BOOL_FIELDS, LIST_FIELDS, SIZE_FIELDS = _field_kinds()

_SIZE = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*")
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Parse "512MiB", "1G", "300MB", "1.5g" or a plain byte count into bytes.

    Binary units (KiB, MiB, GiB and the bare K, M, G that ops tools use) are
    powers of 1024; decimal units with a B (KB, MB, GB) are powers of 1000.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f'"{text}" is not a size; use a number with a unit like 512MiB or 1G')
    number, unit, binary, byte_suffix = match.groups()
    power = _SIZE_POWERS[unit.lower()]
    base = 1000 if (byte_suffix and not binary and power) else 1024
    return int(float(number) * base**power)


def format_size(size: int) -> str:
    """Render bytes the way people read memory: "512.0 MiB"."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def option_name(field: str) -> str:
    """The command-line flag for a setting, for error messages."""
    return "--" + field.replace("_", "-")


def resolve_auto_workers() -> int:
    """`--workers auto`: one worker per CPU this container may use."""
    from supervisor.system import cgroups  # noqa: PLC0415 - only needed for "auto"

    return cgroups.auto_workers(cgroups.cpu_limit(), cgroups.usable_cpus())


def resolve_auto_memory(workers: int) -> int | None:
    """`--max-memory auto`: the container's memory limit shared by its workers."""
    from supervisor.system import cgroups  # noqa: PLC0415 - only needed for "auto"

    return cgroups.auto_max_memory(cgroups.memory_limit(), workers)


def _coerce(field: str, value: Any, auto_workers: Callable[[], int]) -> Any:
    if field in SIZE_FIELDS and isinstance(value, str):
        if value.strip().lower() in ("", "0", "none", "off"):
            return None
        if field == "max_memory" and value.strip().lower() == "auto":
            return _AUTO
        try:
            return parse_size(value)
        except ValueError as exc:
            raise ConfigError(f"{option_name(field)}: {exc}.") from exc
    if field == "umask" and isinstance(value, str):
        text = value.strip()
        try:  # "0o007" as gunicorn reads it, "007" as umask(1) writes it
            return int(text, 0) if not text.startswith("0") or text[1:2].isalpha() else int(text, 8)
        except ValueError as exc:
            raise ConfigError(f'--umask: "{value}" is not a mask like 0o007.') from exc
    if field == "workers" and isinstance(value, str) and value.strip().lower() == "auto":
        return auto_workers()
    if field in LIST_FIELDS and isinstance(value, str):
        return [item for item in re.split(r"[,\s]+", value) if item]
    return value


_AUTO = "auto"


def make_config(
    values: Mapping[str, Any],
    *,
    auto_workers: Callable[[], int] = resolve_auto_workers,
    auto_memory: Callable[[int], int | None] = resolve_auto_memory,
) -> Config:
    """Validate a mapping of settings (raw strings allowed) into a :class:`Config`."""
    cleaned: dict[str, Any] = {}
    for field, value in values.items():
        if field not in FIELD_NAMES:
            raise ConfigError(f'Unknown setting "{field}".')
        if value is None:
            continue
        cleaned[field] = _coerce(field, value, auto_workers)
    if cleaned.get("max_memory") == _AUTO:
        workers = cleaned.get("workers", 1)
        memory = auto_memory(workers if isinstance(workers, int) else 1)
        if memory is None:
            cleaned.pop("max_memory")
        else:
            cleaned["max_memory"] = memory
    try:
        return msgspec.convert(cleaned, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, cleaned)) from exc


def _describe_validation_error(exc: msgspec.ValidationError, values: Mapping[str, Any]) -> str:
    text = str(exc)
    # msgspec reports "Expected `int` >= 1, got `str` - at `$.workers`".
    match = re.search(r"- at `\$\.(\w+)", text)
    if match is None:
        return text
    field = match.group(1)
    problem = text[: match.start()].strip()
    problem = problem.replace("`", "").replace("Expected", "expected")
    got = values.get(field)
    return f"{option_name(field)}: {problem}; got {got!r}."


def replace(config: Config, **changes: Any) -> Config:
    """A copy of ``config`` with some settings changed, validated again."""
    return make_config({**msgspec.structs.asdict(config), **changes})
