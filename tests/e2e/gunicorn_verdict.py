"""The verdict of the corpus test: does the supervisor behave as gunicorn did with a config?

``differences(reference, ours, case)`` lists, as sentences, every observable difference
between a gunicorn run and a supervisor run of the same config (see
tests/e2e/gunicorn_compare.py for what is observed). A start-up warning of ours is
spurious unless every config name it mentions is a gunicorn setting that
docs/migrating.md marks **explained** or **named** (not honoured), or a near-miss typo
of a gunicorn setting. One deviation is tolerated: see ``unmatched_workers``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tests.e2e.gunicorn_compare import Case, Observed
from tests.gunicorn_configs._hooklog import SERVER_CONTRACT, WORKER_CONTRACT
from tests.supervisor_process import REPO

MIGRATING = REPO / "docs" / "migrating.md"
PSEUDO_HOOKS = {"config-load"}  # recorded at module level, not a hook: reported, not compared
TITLE = re.compile(r"^\S+: (master|worker)\b[^\[]*\[(.*)\]")


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


def _by_hook(
    observed: Observed, key: str, skip: tuple[str, ...] = ()
) -> dict[tuple[str, str], set[str]]:
    """(role, hook) -> the distinct values of ``key`` seen (call counts are compared apart)."""
    found: dict[tuple[str, str], set[str]] = {}
    for entry in _real_hooks(observed):
        where = (entry.get("role", "?"), entry["hook"])
        value = _normal(entry.get(key), observed.workdir)
        if isinstance(value, dict):
            value = {name: item for name, item in value.items() if f"{key}.{name}" not in skip}
        found.setdefault(where, set()).add(json.dumps(value, sort_keys=True))
    return found


def _present(observed: Observed) -> dict[tuple[str, str], set[str]]:
    present: dict[tuple[str, str], set[str]] = {}
    for entry in _real_hooks(observed):
        names = {f"server.{n}" for n in entry.get("server", ()) if n in SERVER_CONTRACT}
        names |= {f"worker.{n}" for n in entry.get("worker", ()) if n in WORKER_CONTRACT}
        present.setdefault((entry.get("role", "?"), entry["hook"]), set()).update(names)
    return present


EXIT_HOOKS = ("worker_int", "worker_abort", "worker_exit")


def unmatched_workers(theirs: list[tuple[str, ...]], ours: list[tuple[str, ...]]) -> bool:
    """Whether the workers' hook sequences differ beyond the one tolerated deviation.

    Under UvicornWorker a worker stopped by SIGTERM, SIGINT or SIGABRT dies of the signal
    (uvicorn re-raises it; UvicornWorker resets SIGABRT), so gunicorn calls none of
    worker_int, worker_abort, worker_exit. Where a gunicorn worker saw no exit hook, ours
    may end with them as gunicorn documents them (and its asgi worker calls them).
    """
    left = list(theirs)
    for sequence in ours:
        base = list(sequence)
        while base and base[-1] in EXIT_HOOKS and tuple(base) not in left:
            base.pop()
        if tuple(base) not in left:
            return True
        if tuple(base) != sequence and set(base) & set(EXIT_HOOKS):
            return True  # gunicorn's worker had exit hooks already: the sequence must match
        left.remove(tuple(base))
    return bool(left)


def hook_differences(reference: Observed, ours: Observed, case: Case) -> list[str]:
    diffs = []
    theirs, mine = hook_sequences(reference), hook_sequences(ours)
    for (phase, events), (_, our_events) in zip(theirs["master"], mine["master"], strict=False):
        ordered = phase in ("boot", "stop")
        same = events == our_events if ordered else Counter(events) == Counter(our_events)
        if events and our_events and not ordered:
            same = same and events[0] == our_events[0]
        if not same:
            diffs.append(f"master hooks ({phase}): gunicorn {events}, ours {our_events}")
    if unmatched_workers(theirs["workers"], mine["workers"]):
        diffs.append(f"workers hooks: gunicorn {theirs['workers']}, ours {mine['workers']}")
    if theirs["others"] != mine["others"]:
        diffs.append(f"others hooks: gunicorn {theirs['others']}, ours {mine['others']}")
    ours_present = _present(ours)
    for where, names in _present(reference).items():
        if where in ours_present and names - ours_present[where]:
            missing = sorted(names - ours_present[where])
            diffs.append(f"{where[1]} in the {where[0]}: ours lacks {missing}")
    for key in ("attrs", "env", "values", "worker_pid", "num_workers", "proc"):
        our_values = _by_hook(ours, key, case.not_compared)
        for where, values in _by_hook(reference, key, case.not_compared).items():
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
        "workers": len(observed.workers),
        "worker_gids": sorted({w.get("gid") for w in observed.workers}),
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
    return diffs + hook_differences(reference, ours, case)
