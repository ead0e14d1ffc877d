"""The real `python -m pii` process over gRPC; its logs never contain the PII sent."""

import sys
from pathlib import Path

import grpc
import pytest

from guardmesh.pii.v1 import pii_service_pb2 as pb
from guardmesh.pii.v1 import pii_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from check_service_process import start_service, stop_service  # noqa: E402

pytestmark = pytest.mark.integration

SECRETS = ["Johanna Whitfield", "johanna.whitfield@example.com", "212-555-0146", "536-22-8726"]
TEXT = f"I am {SECRETS[0]}, mail {SECRETS[1]}, phone {SECRETS[2]}, and my social security number is {SECRETS[3]}."


@pytest.fixture(scope="module")
def pii_process(tmp_path_factory):
    service = start_service("pii", "PII_", tmp_path_factory.mktemp("pii"))
    yield service
    stop_service(service)


@pytest.fixture(scope="module")
def stub(pii_process):
    with grpc.insecure_channel(pii_process.address) as channel:
        yield pii_service_pb2_grpc.PiiServiceStub(channel)


def test_analyze(stub):
    response = stub.Analyze(pb.AnalyzeRequest(texts=[TEXT, "What is the capital of France?"]), timeout=30)
    assert len(response.results) == 2
    found = response.results[0].entities
    assert [e.type for e in found] == ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN"]
    assert [TEXT[e.start : e.end] for e in found] == SECRETS
    assert all(0 < e.score <= 1 for e in found)
    assert list(response.results[1].entities) == []


def test_anonymize_each_method(stub):
    for method in (
        pb.REPLACE_METHOD_UNSPECIFIED,
        pb.REPLACE_METHOD_RANDOM,
        pb.REPLACE_METHOD_FAKE,
        pb.REPLACE_METHOD_CATEGORY,
        pb.REPLACE_METHOD_MASK,
    ):
        response = stub.Anonymize(pb.AnonymizeRequest(texts=[TEXT], method=method), timeout=30)
        [out] = response.texts
        assert not any(s in out for s in SECRETS), method
        assert len(response.results[0].entities) == 4
    category = stub.Anonymize(
        pb.AnonymizeRequest(texts=[TEXT], method=pb.REPLACE_METHOD_CATEGORY, excluded_entities=["PHONE_NUMBER"]),
        timeout=30,
    )
    assert category.texts[0] == (
        "I am <PERSON>, mail <EMAIL_ADDRESS>, phone 212-555-0146, and my social security number is <US_SSN>."
    )


@pytest.mark.parametrize(
    "request_",
    [
        pb.AnalyzeRequest(texts=[TEXT], excluded_entities=["SHOE_SIZE"]),
        pb.AnalyzeRequest(texts=[]),
        pb.AnalyzeRequest(texts=["x"] * 65),
        pb.AnalyzeRequest(texts=["x" * 20_001]),
    ],
)
def test_invalid_argument(stub, request_):
    with pytest.raises(grpc.RpcError) as e:
        stub.Analyze(request_, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_invalid_method(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Anonymize(pb.AnonymizeRequest(texts=[TEXT], method=99), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_logs_hold_no_pii(pii_process, stub):
    stub.Analyze(pb.AnalyzeRequest(texts=[TEXT]), timeout=30)
    with pytest.raises(grpc.RpcError):
        stub.Analyze(pb.AnalyzeRequest(texts=[TEXT], excluded_entities=["NOPE"]), timeout=30)
    stop_service(pii_process)  # flush everything
    logs = pii_process.logs()
    assert '"event": "analyze"' in logs and '"types"' in logs
    for secret in [*SECRETS, "Johanna", "Whitfield", "whitfield", "536-22", "555-0146"]:
        assert secret not in logs
