"""Issue 17: every config of tests/gunicorn_configs behaves under the supervisor as under gunicorn.

Each test runs one config under real gunicorn first (the reference: its behaviour is
checked against what the config's header comment says, so the corpus cannot drift
from gunicorn), then under ``python -m supervisor --config``, and asserts the same
observable behaviour: served protocol, worker user, hooks (process, order,
attributes), access-log destinations, exit code on SIGTERM, and no spurious
warning. A warning is spurious unless every config name it mentions is a gunicorn
setting docs/migrating.md marks as ``explained`` or ``named`` (not honoured), or a
near-miss typo of a gunicorn setting.

The ``xfail(strict=False)`` marks are issue 17's work list: each says what the
supervisor does differently today. Remove a mark when its config passes.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gunicorn_compare import CONFIGS, Case, Certs, Observed, observe
from tests.gunicorn_configs._hooklog import SERVER_CONTRACT, WORKER_CONTRACT
from tests.supervisor_process import REPO

pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn_worker")
pytest.importorskip("trustme")

MIGRATING = REPO / "docs" / "migrating.md"
PSEUDO_HOOKS = {"config-load"}  # recorded at module level, not a hook: reported, not compared
TITLE = re.compile(r"^\S+: (master|worker)\b[^\[]*\[(.*)\]")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges: needs root")


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=False, reason=reason)


# The corpus ------------------------------------------------------------------------------


def case(config: str, *, fails: str | None = None, root: bool = False, **fields: Any) -> Any:
    marks = [as_root] if root else []
    if fails:
        marks.append(xfail(fails))
    return pytest.param(Case(config, drops_privileges=root, **fields), id=config, marks=marks)


HOOKED = ("hup", "ttin", "ttou")
LIMITS = ("long_request_line", "many_headers", "large_header")
CASES: list[Any] = [
    case("tiangolo_gunicorn_conf", env={"MAX_WORKERS": "2"}),
    case("tiangolo_from_os_import_environ", env={"WEB_CONCURRENCY": "2"}),
    case("minimal_uvicorn_worker"),
    case("accesslog_stdout"),
    case("accesslog_file_format"),
    case("logconfig_dict_json"),
    case("logconfig_dict_files"),
    case("capture_output_errorlog"),
    case("tls_cert_key", tls=True),
    case(
        "tls_mutual_ca_certs",
        tls=True,
        client_cert=True,
        probes=("without_client_cert",),
        compare=("without_client_cert",),
    ),
    case("tls_ciphers_ssl_context", tls=True),
    case("tls_asgi_worker", tls=True),
    case("prometheus_worker_id", actions=("ttin", "hup")),
    case("prometheus_child_exit"),
    case("privilege_drop_nobody", root=True),
    case(
        "privilege_drop_unix_socket",
        root=True,
        uds="app.sock",
        probes=("socket_mode",),
        compare=("socket_mode",),
    ),
    case(
        "env_timeout_zero",
        env={"TIMEOUT": "0", "WEB_CONCURRENCY": "2"},
        probes=("blocked_3s_with_timeout",),
        compare=("blocked_3s_with_timeout",),
    ),
    case(
        "raw_env_pythonpath_chdir",
        dirs=("release", "vendor", "lib"),
        probes=("env_APP_MODE",),
        compare=("env_APP_MODE",),
    ),
    case("limits_uvicorn_worker", probes=LIMITS),
    case("limits_asgi_worker", probes=LIMITS, compare=LIMITS),
    case("proxy_forwarded_allow_ips", probes=("forwarded",), compare=("forwarded",)),
    case("forwarded_allow_ips_list", probes=("forwarded",), compare=("forwarded",)),
    case("proc_name_daemon", titles=True),
    case("proc_name_from_env", env={"APP_NAME": "billing-api"}, titles=True),
    case("default_proc_name", titles=True),
    case("worker_tmp_dir_threads", dirs=("uploads",)),
    case("preload_app"),
    case("preload_wrong_name"),
    case("subclass_worker_proxy", probes=("forwarded",), compare=("forwarded",)),
    case("subclass_worker_quiet", probes=("server_header",), compare=("server_header",)),
    case("subclass_worker_inline", probes=("server_header",), compare=("server_header",)),
    case("asgi_worker_hooks", actions=("int_worker", "abrt_worker")),
    case("hooks_every_server_hook", actions=("int_worker", "abrt_worker", *HOOKED)),
    case("example_config_hooks", actions=("usr2",)),
    case("worker_exit_cleanup", workers=1, actions=("recycle",), stop="INT"),
    case("reload_on_sighup", actions=("hup",)),
    case("reload_chdir_missing", starts=False),
    case("statsd_metrics"),
    case("h11_worker_keepalive"),
    case("bind_tcp_and_unix"),
    case("typo_near_miss", workers=1, must_warn=r"did you mean"),
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    directory = Path(tmp_path_factory.mktemp("certs", numbered=True))
    # A worker that dropped to nobody must reach the certificates: not under pytest's 0700 root.
    public = Path("/tmp") / f"corpus-certs-{os.getpid()}"
    yield Certs.make(public if os.geteuid() == 0 else directory)
    if os.geteuid() == 0:
        for path in sorted(public.rglob("*"), reverse=True):
            path.unlink()
        public.rmdir()


# Comparing -------------------------------------------------------------------------------


def migrating_targets() -> dict[str, str]:
    """gunicorn setting -> its issue 17 target in docs/migrating.md (honoured/explained/named)."""
    targets: dict[str, str] = {}
    section = MIGRATING.read_text().split("### Every gunicorn setting", 1)[-1]
    for line in re.split(r"\n##+ ", section, maxsplit=1)[0].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`"):
            targets[cells[0].strip("`")] = cells[-2].split(":")[0].strip("* ")
    return targets


def gunicorn_settings() -> set[str]:
    import gunicorn.config

    return {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}


def config_names(case: Case) -> set[str]:
    """Module-level names of the config file (settings, helpers, imports, functions)."""
    text = case.path.read_text()
    names = set(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=", text, re.M))
    names |= set(re.findall(r"^(?:def|class) (\w+)", text, re.M))
    for imported in re.findall(r"^(?:from \S+ )?import (.+)$", text, re.M):
        names |= {part.split(" as ")[-1].strip() for part in imported.split(",")}
    return names


def spurious(warnings: list[str], case: Case) -> list[str]:
    targets = migrating_targets()
    known = gunicorn_settings()
    allowed = {name for name, target in targets.items() if target in ("explained", "named")}
    names = config_names(case)
    bad = []
    for line in warnings:
        said = {name for name in names if re.search(rf"\b{re.escape(name)}\b", line)}
        typos = {n for n in said - known if difflib.get_close_matches(n, known, 1, 0.8)}
        if not said or said - allowed - typos:
            bad.append(line)
    return bad


def _normal(value: Any, workdir: str) -> Any:
    return json.loads(json.dumps(value, default=str).replace(workdir, "$WORKDIR"))


def hook_sequences(observed: Observed) -> dict[str, Any]:
    """Master hooks per phase (in order), each worker's hooks, and the other processes'."""
    hooks = list(_real_hooks(observed))
    masters: list[int] = []
    phases: list[tuple[str, list[tuple[int, str]]]] = []
    bounds = [(name, index) for name, index in [("boot", 0), *observed.segments] if name != "start"]
    workers: dict[int, list[str]] = {}
    others: list[tuple[str, str]] = []
    for n, (phase, first) in enumerate(bounds):
        last = bounds[n + 1][1] if n + 1 < len(bounds) else len(observed.hooks)
        events = []
        for entry in observed.hooks[first:last]:
            if entry not in hooks:
                continue
            if entry.get("role") == "master":
                if entry["pid"] not in masters:
                    masters.append(entry["pid"])
                events.append((masters.index(entry["pid"]), entry["hook"]))
            elif entry.get("role") == "worker":
                workers.setdefault(entry["pid"], []).append(entry["hook"])
            else:
                others.append((entry.get("role", "?"), entry["hook"]))
        if phase == "stop":  # a SIGUSR2 successor is reaped with the session, in any order
            events = [event for event in events if event[0] == 0]
        phases.append((phase, events))
    return {
        "master": phases,
        "workers": sorted(tuple(seq) for seq in workers.values()),
        "others": sorted(others),
    }


def _real_hooks(observed: Observed) -> Iterator[dict[str, Any]]:
    return (entry for entry in observed.hooks if entry["hook"] not in PSEUDO_HOOKS)


def _by_hook(observed: Observed, key: str) -> dict[tuple[str, str], set[str]]:
    """(role, hook) -> the distinct values of ``key`` seen (call counts are compared apart)."""
    found: dict[tuple[str, str], set[str]] = {}
    for entry in _real_hooks(observed):
        where = (entry.get("role", "?"), entry["hook"])
        value = _normal(entry.get(key), observed.workdir)
        found.setdefault(where, set()).add(json.dumps(value, sort_keys=True))
    return found


def _present(observed: Observed) -> dict[tuple[str, str], set[str]]:
    present: dict[tuple[str, str], set[str]] = {}
    for entry in _real_hooks(observed):
        names = {f"server.{n}" for n in entry.get("server", ()) if n in SERVER_CONTRACT}
        names |= {f"worker.{n}" for n in entry.get("worker", ()) if n in WORKER_CONTRACT}
        present.setdefault((entry.get("role", "?"), entry["hook"]), set()).update(names)
    return present


def hook_differences(reference: Observed, ours: Observed) -> list[str]:
    diffs = []
    theirs, mine = hook_sequences(reference), hook_sequences(ours)
    for (phase, events), (_, our_events) in zip(theirs["master"], mine["master"], strict=False):
        ordered = phase in ("boot", "stop")
        same = events == our_events if ordered else Counter(events) == Counter(our_events)
        if events and our_events and not ordered:
            same = same and events[0] == our_events[0]
        if not same:
            diffs.append(f"master hooks ({phase}): gunicorn {events}, ours {our_events}")
    for key in ("workers", "others"):
        if theirs[key] != mine[key]:
            diffs.append(f"{key} hooks: gunicorn {theirs[key]}, ours {mine[key]}")
    ours_present = _present(ours)
    for where, names in _present(reference).items():
        if where in ours_present and names - ours_present[where]:
            missing = sorted(names - ours_present[where])
            diffs.append(f"{where[1]} in the {where[0]}: ours lacks {missing}")
    for key in ("attrs", "env", "values", "worker_pid", "num_workers", "proc"):
        our_values = _by_hook(ours, key)
        for where, values in _by_hook(reference, key).items():
            if where in our_values and values != our_values[where]:
                diffs.append(
                    f"{where[1]} in the {where[0]}, {key}: gunicorn {sorted(values)},"
                    f" ours {sorted(our_values[where])}"
                )
    return diffs


def facts(observed: Observed) -> dict[str, Any]:
    """What the reference must show, as the config's header comment says."""
    sequences = hook_sequences(observed)
    result: dict[str, Any] = {
        "serves": observed.serves,
        "access": sorted(observed.access),
        "worker_users": sorted({w.get("user") for w in observed.workers}),
        "daemonized": observed.daemonized,
        "boot_master_hooks": [hook for _, hook in sequences["master"][0][1]],
        "worker_hooks": sequences["workers"],
        "warnings": len(observed.warnings),
        "config_loads": sum(1 for entry in observed.hooks if entry["hook"] == "config-load"),
    }
    result.update({f"probe:{name}": value for name, value in observed.probes.items()})
    titles = [observed.master.get("title", "")] + [w.get("title", "") for w in observed.workers]
    result["titles"] = sorted({_title(t) for t in titles if t})
    return result


def _title(title: str) -> str:
    match = TITLE.match(title)
    return f"{match.group(1)} [{match.group(2)}]" if match else title


def differences(reference: Observed, ours: Observed, case: Case) -> list[str]:
    if not case.starts:
        problems = []
        if ours.serves or ours.exit_code in (0, None):
            problems.append(
                f"gunicorn refuses to start; ours served={ours.serves} exit={ours.exit_code}"
            )
        if any("Traceback" in text for text in ours.output.values()):
            problems.append("ours printed a traceback instead of one line")
        return problems
    diffs = []
    mine, theirs = facts(ours), facts(reference)
    for key in ("serves", "access", "worker_users"):
        if mine[key] != theirs[key]:
            diffs.append(f"{key}: gunicorn {theirs[key]!r}, ours {mine[key]!r}")
    if case.titles and mine["titles"] != theirs["titles"]:
        diffs.append(f"process titles: gunicorn {theirs['titles']}, ours {mine['titles']}")
    if not reference.daemonized and ours.exit_code != reference.exit_code:
        diffs.append(
            f"exit code on SIG{case.stop}: gunicorn {reference.exit_code}, ours {ours.exit_code}"
        )
    for name in case.compare:
        expected, got = theirs.get(f"probe:{name}"), mine.get(f"probe:{name}")
        if got != expected:
            diffs.append(f"{name}: gunicorn {expected!r}, ours {got!r}")
    diffs += [f"spurious warning: {line}" for line in spurious(ours.warnings, case)]
    if case.must_warn and not re.search(case.must_warn, "\n".join(ours.warnings)):
        diffs.append(f"no warning matching {case.must_warn!r}: {ours.warnings}")
    if ours.errors and not reference.errors:
        diffs.append(f"errors at start: {ours.errors[:3]}")
    return diffs + hook_differences(reference, ours)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", CASES)
def test_config_behaves_as_under_gunicorn(case: Case, certs: Certs) -> None:
    reference = observe("gunicorn", case, certs if case.tls else None)
    theirs = facts(reference)
    wrong = {k: (v, theirs.get(k)) for k, v in case.expect.items() if theirs.get(k) != v}
    assert not wrong, (
        f"gunicorn does not do what {case.config}.py says: {wrong}\n{reference.summary()}"
    )
    ours = observe("supervisor", case, certs if case.tls else None)
    diffs = differences(reference, ours, case)
    assert not diffs, "\n".join(diffs) + "\n--- ours:\n" + ours.summary()


def test_corpus_covers_every_config_file() -> None:
    files = {p.stem for p in CONFIGS.glob("*.py") if not p.stem.startswith("_")} - {"workers"}
    cased = {param.values[0].config for param in CASES}
    assert files == cased
    assert len(cased) >= 30
