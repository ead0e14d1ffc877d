"""Starts a check service (`python -m <module>`) on free ports and waits for gRPC health SERVING.

A plain module (not a conftest) so both tests/integration/pii and tests/integration/injection
can import it: `sys.path.insert(0, <tests/integration>)` then `import check_service_process`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    address: str
    log_path: Path
    process: subprocess.Popen

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_service(
    module: str,
    env_prefix: str,
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 180,
) -> ServiceProcess:
    """Starts `python -m <module>` on free ports and waits until gRPC health says SERVING."""
    port, metrics_port = _free_port(), _free_port()
    log_path = tmp_path / f"{module}.log"
    env = {
        **os.environ,
        f"{env_prefix}PORT": str(port),
        f"{env_prefix}METRICS_PORT": str(metrics_port),
        "PYTHONPATH": str(REPO / "services"),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = ServiceProcess(f"127.0.0.1:{port}", log_path, process)
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(service.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{module} exited with {process.returncode}:\n{service.logs()[-3000:]}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return service
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    stop_service(service)
    raise TimeoutError(f"{module} not SERVING after {timeout_s}s:\n{service.logs()[-3000:]}")


def stop_service(service: ServiceProcess) -> int:
    service.process.send_signal(signal.SIGTERM)
    try:
        return service.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(service.process.pid, signal.SIGKILL)
        return service.process.wait()
