"""Shared fixtures. `mesh` starts the real mesh (Envoy, orchestrator, Triton) once per run."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mesh_keys import SCOPED_KEYS, write_keys_file

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "SmolLM2-135M-Instruct"
# Processes of the session mesh that died unexpectedly, with their log's error lines:
# printed after the run, so a CI log shows what crashed and how.
CRASHES: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mesh:
    base_url: str
    api_key: str
    orchestrator_address: str
    triton_address: str
    run_dir: Path
    env: dict[str, str]
    model_dir: Path
    keys_file: Path

    def generation_metric(self, name: str) -> float:
        """A sample of the generation scheduler's Prometheus metrics, e.g. `generation_active_sequences`."""
        port = int(self.env["GENERATION_METRICS_PORT"]) + 1
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    def active_sequences(self) -> float:
        return self.generation_metric("generation_active_sequences")

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.api_key}"}

    def supervisorctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.run_dir / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env,
        )
        return result.stdout.strip()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.run_dir.glob("*.log")))

    def wait_stable(self, seconds: float = 12, timeout_s: float = 180) -> None:
        """Waits until /readyz has answered 200 for `seconds` in a row. A freshly restarted
        Triton has been seen to crash once within seconds of its first ready answer."""
        deadline = time.monotonic() + timeout_s
        since = None
        while time.monotonic() < deadline:
            try:
                ok = httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            since = (since or time.monotonic()) if ok else None
            if since is not None and time.monotonic() - since >= seconds:
                return
            time.sleep(0.5)
        raise TimeoutError(f"mesh not stably ready within {timeout_s}s; logs:\n{self.logs()[-5000:]}")

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"mesh not ready after {timeout_s}s; logs:\n{self.logs()[-5000:]}")


@pytest.fixture(scope="session")
def mesh(tmp_path_factory) -> Mesh:
    model_dir = Path(
        os.environ.get("GUARDMESH_MODEL_DIR", Path.home() / ".cache/guardmesh/models/smollm2-135m-instruct-int8")
    )
    if not (model_dir / "provenance.json").exists():
        pytest.fail(f"no model in {model_dir}: run `make models` (make test does)")
    run_dir = tmp_path_factory.mktemp("mesh")
    ports = {
        "GUARDMESH_LISTEN_PORT": free_port(),
        "GUARDMESH_ADMIN_PORT": free_port(),
        "ORCHESTRATOR_PORT": free_port(),
        "ORCHESTRATOR_METRICS_PORT": free_port(),
        "GENERATION_GRPC_PORT": free_port(),
        "GENERATION_HTTP_PORT": free_port(),
        "GENERATION_METRICS_PORT": free_port(),
        "PII_PORT": free_port(),
        "PII_METRICS_PORT": free_port(),
        "INJECTION_PORT": free_port(),
        "INJECTION_METRICS_PORT": free_port(),
        "TOXICITY_PORT": free_port(),
        "TOXICITY_METRICS_PORT": free_port(),
        "FACTUALITY_PORT": free_port(),
        "FACTUALITY_METRICS_PORT": free_port(),
    }
    key = "gm-test-" + os.urandom(8).hex()
    keys_file = run_dir / "keys.json"
    write_keys_file(keys_file, SCOPED_KEYS)
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "GUARDMESH_API_KEYS": f"{key},gm-test-second-key",
        "GUARDMESH_RUN_DIR": str(run_dir),
        "GUARDMESH_LOG_TO_FILES": "1",
        "GUARDMESH_KEYS_FILE": str(keys_file),
        # A small waiting queue so the overload test can fill it with a modest burst.
        "GENERATION_MAX_WAITING": "32",
        # Short, so the slow-client test need not wait the default 30 s.
        "GUARDMESH_GATEWAY_REQUEST_TIMEOUT": "3",
        "GUARDMESH_MODEL_DIR": str(model_dir),
        "PYTHONPATH": str(REPO / "services"),
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO / "deploy/local/run.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    mesh = Mesh(
        base_url=f"http://127.0.0.1:{ports['GUARDMESH_LISTEN_PORT']}",
        api_key=key,
        orchestrator_address=f"127.0.0.1:{ports['ORCHESTRATOR_PORT']}",
        triton_address=f"127.0.0.1:{ports['GENERATION_GRPC_PORT']}",
        run_dir=run_dir,
        env=env,
        model_dir=model_dir,
        keys_file=keys_file,
    )
    try:
        mesh.wait_ready()
        yield mesh
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        CRASHES.extend(crashes(run_dir))


def crashes(run_dir: Path) -> list[str]:
    """Unexpected exits in supervisord's log. SIGKILLs are listed without detail (the
    reliability tests send them on purpose; one more than they send would be the OOM killer);
    other deaths come with their log's error lines."""
    log = run_dir / "supervisord.log"
    found = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if "not expected" in line and "SIGKILL" in line:
            found.append(line)
        elif "not expected" in line:
            name = line.split("exited: ", 1)[-1].split(" ", 1)[0]
            service_log = run_dir / f"{name}.log"
            text = service_log.read_text(errors="replace") if service_log.exists() else ""
            errors = [x for x in text.splitlines() if re.search(r"Error|error|Traceback|Fatal|fault|signal|^E\d{4}", x)]
            found.append("\n".join([line, *errors[-40:]]))
    return found


def pytest_terminal_summary(terminalreporter):
    if CRASHES:
        terminalreporter.section("mesh processes that exited unexpectedly")
    for crash in CRASHES:
        terminalreporter.write_line(crash)
