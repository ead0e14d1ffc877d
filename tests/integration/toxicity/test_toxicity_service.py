"""Starts the real toxicity service process and calls it over gRPC."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guardmesh.toxicity.v1 import toxicity_service_pb2 as pb
from guardmesh.toxicity.v1 import toxicity_service_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.model]

REPO = Path(__file__).resolve().parents[3]
SERVICE = "guardmesh.toxicity.v1.ToxicityService"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_serving(address: str, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"service exited with {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{SERVICE} not SERVING after {timeout_s}s")


@pytest.fixture(scope="module")
def address(toxicity_model_dir, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("toxicity") / "service.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "services"),
        "TOXICITY_PORT": str(port),
        "TOXICITY_METRICS_PORT": str(_free_port()),
        "TOXICITY_MODEL_DIR": str(toxicity_model_dir),
    }
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "toxicity"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_serving(f"127.0.0.1:{port}", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    text = log.read_text()
    assert "hurt you" not in text  # texts are never logged


def test_scores_over_grpc(address):
    with grpc.insecure_channel(address) as channel:
        stub = toxicity_service_pb2_grpc.ToxicityServiceStub(channel)
        reply = stub.Score(pb.ScoreRequest(texts=["I will find you and hurt you.", "kill the process"]), timeout=10)
    assert len(reply.scores) == 2
    assert reply.scores[0] > 0.5 > reply.scores[1]


def test_too_many_or_too_long_texts_are_invalid_argument(address):
    with grpc.insecure_channel(address) as channel:
        stub = toxicity_service_pb2_grpc.ToxicityServiceStub(channel)
        for request in (
            pb.ScoreRequest(texts=["x" * 20_001]),
            pb.ScoreRequest(texts=["a"] * 65),
            pb.ScoreRequest(),
        ):
            with pytest.raises(grpc.RpcError) as e:
                stub.Score(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_cancelled_call_does_not_break_the_service(address):
    with grpc.insecure_channel(address) as channel:
        stub = toxicity_service_pb2_grpc.ToxicityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.Score(pb.ScoreRequest(texts=["some text. " * 1500] * 64), timeout=0.05)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1)
        assert len(stub.Score(pb.ScoreRequest(texts=["hello"]), timeout=30).scores) == 1
