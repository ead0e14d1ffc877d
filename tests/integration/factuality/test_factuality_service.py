"""Starts the real factuality service process and calls it over gRPC."""

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

from guardmesh.factuality.v1 import factuality_service_pb2 as pb
from guardmesh.factuality.v1 import factuality_service_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.model]

REPO = Path(__file__).resolve().parents[3]
SERVICE = "guardmesh.factuality.v1.FactualityService"


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
def address(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("factuality") / "service.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "services"),
        "FACTUALITY_PORT": str(port),
        "FACTUALITY_METRICS_PORT": str(_free_port()),
    }
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "factuality"], env=env, stdout=out, stderr=subprocess.STDOUT)
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
    assert "Eiffel" not in text  # texts are never logged


REFERENCE = "The Eiffel Tower in Paris was completed in 1889. It is 330 metres tall."


def test_scores_over_grpc(address):
    with grpc.insecure_channel(address) as channel:
        stub = factuality_service_pb2_grpc.FactualityServiceStub(channel)
        reply = stub.Score(
            pb.ScoreRequest(
                pairs=[
                    pb.Pair(reference=REFERENCE, text="The Eiffel Tower was completed in 1889."),
                    pb.Pair(reference=REFERENCE, text="The Eiffel Tower was completed in 1887."),
                ]
            ),
            timeout=10,
        )
    assert len(reply.scores) == 2
    assert reply.scores[0] > 0.5 > reply.scores[1]


def test_bad_pairs_are_invalid_argument(address):
    with grpc.insecure_channel(address) as channel:
        stub = factuality_service_pb2_grpc.FactualityServiceStub(channel)
        for request in (
            pb.ScoreRequest(pairs=[pb.Pair(reference=REFERENCE, text="x" * 20_001)]),
            pb.ScoreRequest(pairs=[pb.Pair(reference=REFERENCE, text="a")] * 65),
            pb.ScoreRequest(pairs=[pb.Pair(reference="", text="a")]),
            pb.ScoreRequest(),
        ):
            with pytest.raises(grpc.RpcError) as e:
                stub.Score(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_cancelled_call_does_not_break_the_service(address):
    with grpc.insecure_channel(address) as channel:
        stub = factuality_service_pb2_grpc.FactualityServiceStub(channel)
        big = pb.Pair(reference="Some reference sentence here. " * 600, text="Some text sentence. " * 900)
        with pytest.raises(grpc.RpcError) as e:
            stub.Score(pb.ScoreRequest(pairs=[big] * 8), timeout=0.05)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1)
        assert len(stub.Score(pb.ScoreRequest(pairs=[pb.Pair(reference="a b", text="a b")]), timeout=30).scores) == 1
