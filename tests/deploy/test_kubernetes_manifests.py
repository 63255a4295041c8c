"""The Kubernetes manifests (deploy/kubernetes/): valid for the Kubernetes API, and wired
together where a schema cannot see it.

Every document is validated with ``kubernetes-validate`` (strict: unknown fields are errors,
as ``kubectl apply``'s default strict field validation makes them) against the Kubernetes
version pinned below. KEDA's ``ScaledObject`` is a custom resource that validator does not
know: it is validated against KEDA's own CRD schema, vendored beside this file.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = "kustomization.yaml"
# kubernetes-validate ships schemas for 1.25 to 1.37; 1.33 is still served by the managed
# offerings (GKE, EKS, AKS) and the manifests use nothing newer.
KUBERNETES_VERSION = "1.33.0"
# keda.sh/v1alpha1 ScaledObject's CRD, KEDA v2.20.2 (source in the file's first lines).
KEDA_CRD = Path(__file__).with_name("keda.sh_scaledobjects.yaml")
# DESIGN.md beside the checkout pins the commands; where it is absent (a bare
# checkout), the commands it pins as of this writing.
DESIGN = ROOT.parent / "shared" / "DESIGN.md"
DESIGN_COMMANDS = frozenset({"bot", "worker", "separate", "stats", "up", "models", "web"})
# The Secret the operator creates by hand (docs/operations.md, "Kubernetes").
SECRET_NAME = "demix-telegram"
SECRET_KEY = "TELEGRAM_BOT_TOKEN"
# The trigger metadata KEDA v2.20.2's prometheus scaler reads (pkg/scalers/prometheus_scaler.go).
PROMETHEUS_TRIGGER_KEYS = frozenset(
    {
        "serverAddress",
        "query",
        "queryParameters",
        "threshold",
        "activationThreshold",
        "namespace",
        "customHeaders",
        "ignoreNullValues",
        "unsafeSsl",
        "awsRegion",
        "timeout",
        "identityOwner",
    }
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

Doc = dict[str, Any]


def _load(folder: Path) -> list[tuple[str, Doc]]:
    """(file name, document) of every manifest document, in file order."""
    documents = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == KUSTOMIZATION:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                documents.append((path.name, doc))
    return documents


DOCUMENTS = _load(MANIFESTS)


def _id(entry: tuple[str, Doc]) -> str:
    name, doc = entry
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _is_keda(doc: Doc) -> bool:
    return str(doc.get("apiVersion", "")).startswith("keda.sh/")


def _all(kind: str) -> list[Doc]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] == kind]


def _one(kind: str, name: str) -> Doc:
    found = [doc for doc in _all(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _workloads() -> Iterator[Doc]:
    for _, doc in DOCUMENTS:
        if doc["kind"] in WORKLOAD_KINDS:
            yield doc


def _containers(workload: Doc) -> list[Doc]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _container(workload: Doc, name: str) -> Doc:
    found = [c for c in _containers(workload) if c["name"] == name]
    assert len(found) == 1, f"no container {name} in {workload['metadata']['name']}"
    return found[0]


def _config() -> dict[str, str]:
    """The settings ConfigMap's data (the one ConfigMap the containers read)."""
    (config_map,) = _all("ConfigMap")
    data: dict[str, str] = config_map["data"]
    return data


def _environment(container: Doc) -> dict[str, str]:
    """What the container's process sees: the ConfigMaps it reads, then its own ``env``
    values (which win); secret references are left out."""
    config_maps = {doc["metadata"]["name"]: doc["data"] for doc in _all("ConfigMap")}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]])
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
    return environment


def _design_section(title: str) -> str | None:
    if not DESIGN.is_file():
        return None
    text = DESIGN.read_text()
    match = re.search(
        rf"^## {re.escape(title)}\b[^\n]*\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL
    )
    assert match is not None, f"DESIGN.md has no section {title}"
    return match.group(1)


# --- the schemas --------------------------------------------------------------------------


def test_manifests_exist_and_the_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((MANIFESTS / KUSTOMIZATION).read_text())
    files = {path.name for path in MANIFESTS.glob("*.yaml")} - {KUSTOMIZATION}
    assert not list(MANIFESTS.glob("*.yml")), "name the manifests *.yaml"
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == "demix"
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {
        "Namespace",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
        "Service",
        "ScaledObject",
    } <= kinds
    for _, doc in DOCUMENTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"], _id(("", doc))


@pytest.mark.parametrize("entry", [entry for entry in DOCUMENTS if not _is_keda(entry[1])], ids=_id)
def test_document_is_valid_for_kubernetes(entry: tuple[str, Doc]) -> None:
    kubernetes_validate.validate(entry[1], KUBERNETES_VERSION, strict=True)


def _structural_to_json_schema(schema: Doc) -> Doc:
    """A CRD's structural schema as a JSON Schema that, like ``kubectl apply``'s strict field
    validation, rejects unknown fields: objects with ``properties`` and no
    ``additionalProperties`` (or ``x-kubernetes-preserve-unknown-fields``) get
    ``additionalProperties: false``."""
    out: Doc = {key: value for key, value in schema.items() if not key.startswith("x-kubernetes-")}
    if "properties" in schema:
        out["properties"] = {
            name: _structural_to_json_schema(sub) for name, sub in schema["properties"].items()
        }
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural_to_json_schema(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        out["items"] = _structural_to_json_schema(schema["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            out[key] = [_structural_to_json_schema(sub) for sub in schema[key]]
    return out


def _keda_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    assert crd["spec"]["names"]["kind"] == kind
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = _structural_to_json_schema(served["schema"]["openAPIV3Schema"])
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _check_scaled_object(doc: Doc) -> None:
    _keda_validator(doc["kind"], doc["apiVersion"]).validate(doc)
    # The CRD's one CEL rule (x-kubernetes-validations), which JSON Schema cannot express.
    spec = doc["spec"]
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), (
        "minReplicaCount must be less than or equal to maxReplicaCount"
    )
    assert set(doc["metadata"]) <= {"name", "namespace", "labels", "annotations"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


@pytest.mark.parametrize("entry", [entry for entry in DOCUMENTS if _is_keda(entry[1])], ids=_id)
def test_keda_document_is_valid_for_kedas_crd(entry: tuple[str, Doc]) -> None:
    assert entry[1]["kind"] == "ScaledObject"
    _check_scaled_object(entry[1])


def test_the_vendored_keda_crd_is_a_valid_crd() -> None:
    kubernetes_validate.validate(
        yaml.safe_load(KEDA_CRD.read_text()), KUBERNETES_VERSION, strict=True
    )


def test_the_validators_reject_broken_documents() -> None:
    """The checks above can fail: an unknown field, a wrong type, a missing field."""
    worker = copy.deepcopy(_one("Deployment", "worker"))
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 25  # not the field's name
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
    service = copy.deepcopy(_one("Service", "web"))
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)

    scaled = _one("ScaledObject", "worker")
    broken: list[Doc] = []
    for mutate in (
        lambda so: so["spec"]["triggers"][0]["metadata"].update(threshold=3),  # not a string
        lambda so: so["spec"].update(maxReplicas=10),  # HPA's name, not KEDA's
        lambda so: so["spec"].pop("scaleTargetRef"),
        lambda so: so["spec"].update(minReplicaCount=-1),
        lambda so: so["spec"].update(minReplicaCount=20, maxReplicaCount=10),
    ):
        copied = copy.deepcopy(scaled)
        mutate(copied)
        broken.append(copied)
    for doc in broken:
        with pytest.raises((jsonschema.ValidationError, AssertionError)):
            _check_scaled_object(doc)


# --- what a schema cannot see -------------------------------------------------------------


def test_every_workload_selects_its_own_pods() -> None:
    for workload in _workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
        assert set(workload["spec"]["selector"]) == {"matchLabels"}
    # No two workloads select each other's pods.
    workloads = list(_workloads())
    for a in workloads:
        for b in workloads:
            if a is not b:
                selector = a["spec"]["selector"]["matchLabels"].items()
                assert not selector <= b["spec"]["template"]["metadata"]["labels"].items()


def test_every_service_selects_pods_and_their_named_ports() -> None:
    for service in _all("Service"):
        selector = service["spec"]["selector"].items()
        selected = [
            w
            for w in _workloads()
            if selector <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in selected:
                ports = [p for c in _containers(workload) for p in c.get("ports", [])]
                key = "name" if isinstance(target, str) else "containerPort"
                assert any(p.get(key) == target for p in ports), (
                    f"Service {service['metadata']['name']} port {target}: no such container "
                    f"port in {workload['metadata']['name']}"
                )
    for workload in _all("StatefulSet"):
        governing = _one("Service", workload["spec"]["serviceName"])
        assert governing["spec"].get("clusterIP") == "None"


def test_referenced_claims_config_maps_and_secrets_exist() -> None:
    claims = {doc["metadata"]["name"] for doc in _all("PersistentVolumeClaim")}
    config_maps = {doc["metadata"]["name"] for doc in _all("ConfigMap")}
    assert not _all("Secret"), "the manifests carry no secret: the operator creates it"
    secret_refs = set()
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        templates = {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "secret" in volume:
                secret_refs.add((volume["secret"]["secretName"], None))
        for container in _containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes.keys() | templates, mount["name"]
            for source in container.get("envFrom", []):
                assert set(source) == {"configMapRef"}
                assert source["configMapRef"]["name"] in config_maps
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["name"] in config_maps
                if "secretKeyRef" in ref:
                    secret_refs.add((ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]))
                if variable["name"] == SECRET_KEY:
                    assert "value" not in variable, "the token is never written in a manifest"
    assert secret_refs == {(SECRET_NAME, SECRET_KEY)}
    # The guide's `kubectl create secret` makes exactly that Secret and key.
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert re.search(
        rf"kubectl -n demix create secret generic {SECRET_NAME}\s+\\?\s*"
        rf"--from-literal={SECRET_KEY}=",
        guide,
    ), "docs/operations.md shows how to create the Secret the manifests read"


def _demix_subcommands(capsys: pytest.CaptureFixture[str]) -> set[str]:
    """Subcommands `demix` takes today (its parser accepts `--help` after them) and those
    DESIGN.md pins (`demix web` may land after the manifests)."""
    from demix.cli import main

    commands = set()
    for name in DESIGN_COMMANDS | {"no-such-command"}:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        if exit_info.value.code == 0:
            commands.add(name)
    capsys.readouterr()
    assert "no-such-command" not in commands
    section = _design_section("Commands")
    pinned = (
        set(re.findall(r"^- `demix ([a-z]+)", section, flags=re.MULTILINE))
        if section is not None
        else set(DESIGN_COMMANDS)
    )
    assert {"bot", "worker"} <= commands
    return commands | pinned


def test_containers_run_demix_subcommands_and_its_health_checks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import demix.health

    subcommands = _demix_subcommands(capsys)
    ran = set()
    for workload in _workloads():
        for container in _containers(workload):
            if not container["image"].startswith("demix-"):
                continue
            command = [*container.get("command", []), *container.get("args", [])]
            assert command[0] == "demix" and len(command) == 2, command
            assert command[1] in subcommands, f"`demix {command[1]}` is no demix subcommand"
            ran.add(command[1])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                check = container.get(probe, {}).get("exec")
                if check is None:
                    continue
                argv = check["command"]
                assert argv[:3] == ["python", "-m", "demix.health"], argv
                assert len(argv) == 4 and hasattr(demix.health, f"check_{argv[3]}"), argv
                assert argv[3] == command[1], "a container checks its own kind"
    assert ran == {"bot", "web", "worker"}


def test_bot_and_web_are_one_pod_sharing_the_sqlite_volume() -> None:
    bot = _one("Deployment", "bot")
    assert bot["spec"]["replicas"] == 1
    assert bot["spec"]["strategy"] == {"type": "Recreate"}
    pod = bot["spec"]["template"]["spec"]
    assert {c["name"] for c in pod["containers"]} == {"bot", "web"}
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    (claim,) = set(claims.values())
    assert "ReadWriteOnce" in _one("PersistentVolumeClaim", claim)["spec"]["accessModes"]
    for container in pod["containers"]:
        # The bot image: no torch (Dockerfile's `bot` target, docker-compose.yml's name).
        assert container["image"].split(":")[0].rsplit("/", 1)[-1] == "demix-bot"
        environment = _environment(container)
        db_folder = os.path.dirname(environment["DEMIX_DB_PATH"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert claims.get(mounts.get(db_folder, "")) == claim, container["name"]
    # One network: the two processes' ports must differ.
    bot_env = _environment(_container(bot, "bot"))
    web_env = _environment(_container(bot, "web"))
    assert bot_env["DEMIX_METRICS_PORT"] != web_env["DEMIX_METRICS_PORT"]
    web_ports = {p["name"]: p["containerPort"] for p in _container(bot, "web")["ports"]}
    assert web_ports["http"] == int(web_env["DEMIX_WEB_PORT"])
    assert web_env["DEMIX_WEB_HOST"] == "0.0.0.0"
    assert web_ports["web-metrics"] == int(web_env["DEMIX_METRICS_PORT"])
    bot_ports = {p["name"]: p["containerPort"] for p in _container(bot, "bot")["ports"]}
    assert bot_ports["metrics"] == int(bot_env["DEMIX_METRICS_PORT"])
    assert bot_env["DEMIX_METRICS_HOST"] == "0.0.0.0"
    # Prometheus reaches the bot's gauge through a Service on that port.
    metrics = _one("Service", "bot-metrics")
    assert {p["targetPort"] for p in metrics["spec"]["ports"]} >= {"metrics"}
    assert metrics["metadata"]["annotations"]["prometheus.io/port"] == str(bot_ports["metrics"])


def test_redis_persists_its_append_only_file_and_is_where_redis_url_says() -> None:
    redis = _one("StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 1
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    (template,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[template["metadata"]["name"]] == "/data"
    url = urlsplit(_config()["REDIS_URL"])
    service = _one("Service", url.hostname or "")
    assert service["spec"]["selector"].items() <= (
        redis["spec"]["template"]["metadata"]["labels"].items()
    )
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    # Only the pods that use Redis may reach it, and each of them may.
    policy = _one("NetworkPolicy", "redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_labels
    (rule,) = policy["spec"]["ingress"]
    allowed = [peer["podSelector"]["matchLabels"].items() for peer in rule["from"]]
    ports = {p["name"] for p in container["ports"]}
    assert {p["port"] for p in rule["ports"]} <= ports
    clients = [
        w for w in _workloads() if any("REDIS_URL" in _environment(c) for c in _containers(w))
    ]
    assert {w["metadata"]["name"] for w in clients} == {"bot", "worker"}
    for workload in clients:
        labels = workload["spec"]["template"]["metadata"]["labels"].items()
        assert any(selector <= labels for selector in allowed), workload["metadata"]["name"]


def test_worker_asks_for_a_gpu_on_the_spot_pool_with_a_grace_beyond_its_stop_grace() -> None:
    worker = _one("Deployment", "worker")
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    pod = worker["spec"]["template"]["spec"]
    container = _container(worker, "worker")
    assert container["image"].split(":")[0].rsplit("/", 1)[-1] == "demix-worker"
    resources = container["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    assert str(resources["requests"].get("nvidia.com/gpu", "1")) == "1"
    # The spot pool: selected, and its taints (and the GPU taint) tolerated.
    assert pod["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    tolerated = {t["key"] for t in pod["tolerations"]}
    assert {"cloud.google.com/gke-spot", "nvidia.com/gpu"} <= tolerated
    environment = _environment(container)
    stop_grace = float(environment["DEMIX_WORKER_STOP_GRACE_S"])
    grace = pod["terminationGracePeriodSeconds"]
    assert stop_grace < grace <= stop_grace + 10, (grace, stop_grace)
    # Spot instances give about 30 s of notice.
    assert grace <= 30
    assert environment["DEMIX_JOB_LEASE_S"] == "30"
    probes = {
        name for name in ("startupProbe", "readinessProbe", "livenessProbe") if name in container
    }
    assert probes == {"startupProbe", "readinessProbe", "livenessProbe"}


def test_scaled_object_scales_the_worker_on_the_queue_depth() -> None:
    from bot.metrics import BotMetrics
    from worker.metrics import WorkerMetrics

    scaled = _one("ScaledObject", "worker")
    worker = _one("Deployment", "worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == worker["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert scaled["metadata"]["namespace"] == worker["metadata"]["namespace"]
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["maxReplicaCount"] >= 2
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    metadata = trigger["metadata"]
    assert set(metadata) <= PROMETHEUS_TRIGGER_KEYS, set(metadata) - PROMETHEUS_TRIGGER_KEYS
    # The metrics the query reads are the ones the bot and the workers serve.
    served = {
        metric.name
        for registry in (BotMetrics().registry, WorkerMetrics().registry)
        for metric in registry.collect()
    }
    queried = set(re.findall(r"\b(demix_[a-z_]+)\b", metadata["query"]))
    assert "demix_queue_depth" in queried
    assert queried <= served, queried - served
    namespaces = set(re.findall(r'namespace="([^"]+)"', metadata["query"]))
    assert namespaces <= {worker["metadata"]["namespace"]}
    # One worker per DEMIX_WORKER_MAX_JOBS jobs; any job wakes the first one.
    assert float(metadata["threshold"]) == float(_config()["DEMIX_WORKER_MAX_JOBS"])
    assert float(metadata.get("activationThreshold", "0")) == 0
    assert urlsplit(metadata["serverAddress"]).scheme in {"http", "https"}


@pytest.mark.usefixtures("bare_environment")
def test_settings_the_manifests_set_are_known_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    known = set(Settings.env_names().values())
    for workload in _workloads():
        for container in _containers(workload):
            if not container["image"].startswith("demix-"):
                continue
            environment = _environment(container)
            unknown = {
                name
                for name in environment
                if name.startswith(("DEMIX_", "TELEGRAM_", "REDIS_")) and name not in known
            }
            assert not unknown, f"{container['name']}: unknown settings {unknown}"
            with monkeypatch.context() as patch:
                for name, value in environment.items():
                    patch.setenv(name, value)
                Settings(_env_file=None)  # type: ignore[call-arg]
