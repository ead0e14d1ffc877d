"""Contract test of the gateway: real Envoy (via gateway/start.py) in front of a fake
orchestrator that implements the public gRPC services. Asserts what a REST caller sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio
from google.api import httpbody_pb2
from google.protobuf import json_format, struct_pb2

from guardmesh.v1 import (
    check_service_pb2,
    check_service_pb2_grpc,
    completion_service_pb2,
    completion_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    readiness_service_pb2,
    readiness_service_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[2]
START = REPO / "gateway" / "start.py"
DESCRIPTOR = REPO / "build" / "guardmesh.pb"

# Async tests and fixtures share the session event loop (pyproject: asyncio_mode=auto,
# session loop scope), so the fake upstream and the HTTP clients run on one loop.
pytestmark = pytest.mark.skipif(not DESCRIPTOR.is_file(), reason="descriptor set missing: run `make proto`")

GRPC_CODES = {code.name: code for code in grpc.StatusCode}


# --------------------------------------------------------------------------- fake upstream


@dataclass
class Call:
    method: str
    request: object
    metadata: dict[str, str]


@dataclass
class FakeOrchestrator(
    completion_service_pb2_grpc.CompletionServiceServicer,
    model_service_pb2_grpc.ModelServiceServicer,
    check_service_pb2_grpc.CheckServiceServicer,
    readiness_service_pb2_grpc.ReadinessServiceServicer,
):
    """Behaviour is chosen by the request: a `model`/`text` of `error:<CODE>:<message>`
    aborts with that status; model `stream` streams SSE, gated by `gate`; model `slow`
    never answers."""

    calls: list[Call] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    gate_waited: bool | None = None

    def _record(self, method: str, request: object, context) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.calls.append(Call(method, request, metadata))

    def last(self, method: str) -> Call:
        return [c for c in self.calls if c.method == method][-1]

    @staticmethod
    async def _maybe_abort(selector: str, context) -> None:
        if selector.startswith("error:"):
            _, code, message = selector.split(":", 2)
            await context.abort(GRPC_CODES[code], message)

    async def CreateCompletionHttp(self, request, context):
        self._record("CreateCompletionHttp", request, context)
        await self._maybe_abort(request.model, context)
        if request.model == "slow":
            await asyncio.sleep(60)
        if request.model == "stream":
            chunk = {"id": "cmpl-1", "choices": [{"index": 0, "text": "Hel"}]}
            yield httpbody_pb2.HttpBody(
                content_type="text/event-stream",
                data=f"data: {json.dumps(chunk)}\n\n".encode(),
            )
            # The last event is only sent once the client has seen the first one.
            try:
                await asyncio.wait_for(self.gate.wait(), timeout=10)
                self.gate_waited = True
            except TimeoutError:
                self.gate_waited = False
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=b"data: [DONE]\n\n")
            return
        body = {"object": "text_completion", "model": request.model}
        yield httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(body).encode())

    async def CheckCompletionAccess(self, request, context):
        self._record("CheckCompletionAccess", request, context)
        auth = dict(context.invocation_metadata()).get("authorization")
        if auth != "Bearer good-key":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid api key")
        return completion_service_pb2.CheckCompletionAccessResponse(message="completions are available")

    async def ListModels(self, request, context):
        self._record("ListModels", request, context)
        return model_service_pb2.ListModelsResponse(
            object="list",
            data=[
                model_service_pb2.Model(
                    id="SmolLM2-135M-Instruct",
                    object="model",
                    owned_by="HuggingFaceTB",
                    capabilities=[request.capability or "completion"],
                    max_context_length=8192,
                )
            ],
        )

    async def CheckToxicity(self, request, context):
        self._record("CheckToxicity", request, context)
        await self._maybe_abort(request.text, context)
        return check_service_pb2.CheckToxicityResponse(
            id="toxi-1",
            object="toxicity.check",
            checks=[check_service_pb2.ScoreCheck(index=0, score=0.0, status="success")],
        )

    async def GetReadiness(self, request, context):
        self._record("GetReadiness", request, context)
        return readiness_service_pb2.GetReadinessResponse(status="ready", services={"generation": "SERVING"})


async def start_upstream() -> tuple[grpc.aio.Server, FakeOrchestrator, int]:
    fake = FakeOrchestrator()
    server = grpc.aio.server()
    completion_service_pb2_grpc.add_CompletionServiceServicer_to_server(fake, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(fake, server)
    check_service_pb2_grpc.add_CheckServiceServicer_to_server(fake, server)
    readiness_service_pb2_grpc.add_ReadinessServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, fake, port


# --------------------------------------------------------------------------- real gateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    proc: subprocess.Popen
    url: str
    admin_port: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(environ: dict[str, str]) -> subprocess.Popen:
    # start.py execs Envoy, so proc.pid is Envoy's pid.
    return subprocess.Popen([sys.executable, str(START)], env=environ, stdin=subprocess.DEVNULL)


async def start_gateway(upstream_port: int, run_dir: Path, **env: str) -> Gateway:
    listen_port, admin_port = free_port(), free_port()
    environ = {
        **os.environ,
        "GUARDMESH_LISTEN_PORT": str(listen_port),
        "GUARDMESH_ADMIN_PORT": str(admin_port),
        "GUARDMESH_ORCHESTRATOR_HOST": "127.0.0.1",
        "GUARDMESH_ORCHESTRATOR_PORT": str(upstream_port),
        "GUARDMESH_RUN_DIR": str(run_dir),
        "GUARDMESH_ENVOY_CONCURRENCY": "1",
        **env,
    }
    proc = spawn(environ)
    gateway = Gateway(proc, f"http://127.0.0.1:{listen_port}", admin_port)
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {proc.returncode}")
            try:
                ready = await client.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1)
                if ready.status_code == 200:
                    return gateway
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                gateway.stop()
                raise RuntimeError("envoy did not become ready in 20 s")
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def upstream() -> AsyncIterator[tuple[FakeOrchestrator, int]]:
    server, fake, port = await start_upstream()
    yield fake, port
    await server.stop(grace=None)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def gateway(upstream, tmp_path_factory) -> AsyncIterator[Gateway]:
    _, port = upstream
    gw = await start_gateway(port, tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as c:
        yield c


@pytest.fixture
def fake(upstream) -> FakeOrchestrator:
    return upstream[0]


def assert_json_error(response: httpx.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str) and body["error"]
    if message is not None:
        assert body["error"] == message
    assert not [h for h in response.headers if h.lower().startswith("grpc-")], response.headers


# --------------------------------------------------------------------------- success


async def test_unary_json_uses_proto_names_and_prints_defaults(client):
    r = await client.post("/toxicity", json={"text": "hello"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert not [h for h in r.headers if h.startswith("grpc-")]
    assert r.json() == {
        "id": "toxi-1",
        "object": "toxicity.check",
        "created": 0,
        "checks": [{"index": 0, "score": 0, "status": "success"}],
    }


async def test_models_snake_case_and_path_binding(client, fake):
    r = await client.get("/models/completion")
    assert r.status_code == 200
    model = r.json()["data"][0]
    assert model["owned_by"] == "HuggingFaceTB"
    assert model["max_context_length"] == 8192
    assert fake.last("ListModels").request.capability == "completion"
    r = await client.get("/models")
    assert r.status_code == 200
    assert fake.last("ListModels").request.capability == ""


async def test_completions_json_body(client):
    r = await client.post("/completions", json={"model": "m", "prompt": "hi"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"object": "text_completion", "model": "m"}


async def test_completions_stream_arrives_incrementally(client, fake):
    fake.gate.clear()
    fake.gate_waited = None
    received: list[bytes] = []
    async with client.stream("POST", "/completions", json={"model": "stream", "prompt": "hi"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        assert not [h for h in r.headers if h.startswith("grpc-")]
        async for chunk in r.aiter_raw():
            received.append(chunk)
            if b"\n\n" in b"".join(received) and not fake.gate.is_set():
                # First event arrived while the server still holds back the last one.
                assert b"[DONE]" not in b"".join(received)
                fake.gate.set()
    text = b"".join(received).decode()
    events = [e for e in text.split("\n\n") if e]
    assert events[0].startswith("data: ") and json.loads(events[0][6:])["choices"][0]["index"] == 0
    assert events[-1] == "data: [DONE]"
    assert fake.gate_waited is True


def _curl_has_http2() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    version = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
    return "HTTP2" in version


@pytest.mark.skipif(not _curl_has_http2(), reason="needs curl with HTTP/2")
async def test_http2_stream_incremental_without_grpc_trailers(gateway, fake):
    fake.gate.clear()
    fake.gate_waited = None
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-N",
        "-v",
        "--http2-prior-knowledge",
        "--max-time",
        "20",
        "-H",
        "content-type: application/json",
        "--data",
        json.dumps({"model": "stream", "prompt": "hi"}),
        f"{gateway.url}/completions",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        assert first.startswith(b"data: {")
        fake.gate.set()
        rest = await asyncio.wait_for(proc.stdout.read(), timeout=10)
        stderr = (await proc.stderr.read()).decode()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr
    assert rest.strip().endswith(b"data: [DONE]")
    assert fake.gate_waited is True
    received = [line.lower().strip() for line in stderr.splitlines() if line.startswith("< ")]
    assert "< http/2 200" in received
    assert not [line for line in received if line.startswith("< grpc-")], received


async def test_nulls_lists_and_unknown_fields(client, fake):
    body = {
        "model": "m",
        "prompt": ["a", "b"],
        "temperature": None,
        "max_tokens": None,
        "stop": None,
        "stream": None,
        "input": None,
        "output": None,
        "logit_bias": None,
        "stream_options": None,
        "no_such_field": 1,
    }
    r = await client.post("/completions", json=body)
    assert r.status_code == 200, r.text
    request = fake.last("CreateCompletionHttp").request
    assert request.prompt.WhichOneof("kind") == "list_value"
    assert json_format.MessageToDict(request.prompt) == ["a", "b"]
    assert not request.HasField("temperature")
    assert not request.HasField("stream")
    assert not request.HasField("input")
    assert request.stop == struct_pb2.Value() or request.stop.WhichOneof("kind") == "null_value"

    r = await client.post(
        "/completions",
        json={
            "model": "m",
            "prompt": "x",
            "stop": ["\n"],
            "logit_bias": {"50256": -100},
            "input": {"pii": "replace"},
            "temperature": 0.5,
        },
    )
    assert r.status_code == 200, r.text
    request = fake.last("CreateCompletionHttp").request
    assert request.prompt.string_value == "x"
    assert json_format.MessageToDict(request.stop) == ["\n"]
    assert dict(request.logit_bias) == {"50256": -100.0}
    assert request.input.pii == "replace"
    assert request.temperature == 0.5


async def test_authorization_reaches_upstream_as_metadata(client, fake):
    r = await client.get("/completions", headers={"Authorization": "Bearer good-key"})
    assert r.status_code == 200
    assert r.json() == {"message": "completions are available"}
    assert fake.last("CheckCompletionAccess").metadata["authorization"] == "Bearer good-key"
    r = await client.get("/completions", headers={"Authorization": "Bearer bad"})
    assert_json_error(r, 401, "invalid api key")


async def test_readyz_needs_no_key(client, fake):
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "services": {"generation": "SERVING"}}
    assert "authorization" not in fake.last("GetReadiness").metadata


# --------------------------------------------------------------------------- errors


ERROR_CASES = [
    ("INVALID_ARGUMENT", 400),
    ("UNAUTHENTICATED", 401),
    ("PERMISSION_DENIED", 403),
    ("NOT_FOUND", 404),
    ("RESOURCE_EXHAUSTED", 429),
    ("UNIMPLEMENTED", 501),
    ("UNAVAILABLE", 503),
    ("DEADLINE_EXCEEDED", 504),
]


@pytest.mark.parametrize(
    ("code", "status"),
    [*ERROR_CASES, ("FAILED_PRECONDITION", 400), ("ABORTED", 409), ("INTERNAL", 500)],
)
async def test_grpc_error_on_unary(client, code, status):
    message = f'{code.lower()}: "quoted" café'
    r = await client.post("/toxicity", json={"text": f"error:{code}:{message}"})
    assert_json_error(r, status, message)


@pytest.mark.parametrize(("code", "status"), ERROR_CASES)
async def test_grpc_error_on_completions_stream_method(client, code, status):
    body = {"model": f"error:{code}:model x failed", "prompt": "p"}
    r = await client.post("/completions", json=body)
    assert_json_error(r, status, "model x failed")


async def test_grpc_error_without_message_gets_default(client):
    r = await client.post("/toxicity", json={"text": "error:INVALID_ARGUMENT:"})
    assert_json_error(r, 400)


async def test_malformed_json(client):
    r = await client.post(
        "/completions",
        content=b'{"model": "m", "prompt": ',
        headers={"content-type": "application/json"},
    )
    assert_json_error(r, 400)
    assert r.json()["error"].startswith("invalid request: ")


async def test_wrong_type(client):
    r = await client.post("/completions", json={"model": "m", "prompt": "p", "max_tokens": "many"})
    assert_json_error(r, 400)


async def test_unknown_query_parameter(client):
    r = await client.get("/models", params={"bogus": "1"})
    assert_json_error(r, 400)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/v1/completions"),
        ("GET", "/completions/extra"),
        ("POST", "/guardmesh.v1.CompletionService/CreateCompletion"),  # JSON to a gRPC path
    ],
)
async def test_unknown_route_is_json_404(client, fake, method, path):
    before = len(fake.calls)
    r = await client.request(method, path, json={})
    assert_json_error(r, 404)
    assert len(fake.calls) == before


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/completions", "GET, POST"),
        ("POST", "/readyz", "GET"),
        ("POST", "/models", "GET"),
        ("PUT", "/models/completion", "GET"),
        ("GET", "/toxicity", "POST"),
    ],
)
async def test_known_path_with_the_wrong_method_is_json_405(client, fake, method, path, allow):
    before = len(fake.calls)
    r = await client.request(method, path, json={})
    assert_json_error(r, 405)
    assert r.headers["allow"] == allow
    assert len(fake.calls) == before


async def test_head_error_has_no_body(client):
    r = await client.head("/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.content == b""
    r = await client.get("/nope")  # same keep-alive connection is still in sync
    assert_json_error(r, 404)


async def test_body_too_large(client, fake):
    before = len(fake.calls)
    r = await client.post("/completions", json={"model": "m", "prompt": "x" * (1024 * 1024 + 10)})
    assert_json_error(r, 413)
    assert len(fake.calls) == before
    r = await client.post("/completions", json={"model": "m", "prompt": "x" * (512 * 1024)})
    assert r.status_code == 200


async def test_native_grpc_passes_through(gateway):
    target = gateway.url.removeprefix("http://")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = check_service_pb2_grpc.CheckServiceStub(channel)
        reply = await stub.CheckToxicity(check_service_pb2.CheckToxicityRequest(text="ok"))
        assert reply.checks[0].status == "success"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CheckToxicity(check_service_pb2.CheckToxicityRequest(text="error:INVALID_ARGUMENT:bad text"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "bad text"


async def test_upstream_timeout_and_down(tmp_path):
    server, _, port = await start_upstream()
    gw = await start_gateway(port, tmp_path, GUARDMESH_GATEWAY_IDLE_TIMEOUT="1")
    try:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
            r = await c.post("/completions", json={"model": "m", "prompt": "p"})
            assert r.status_code == 200
            r = await c.post("/completions", json={"model": "slow", "prompt": "p"})
            assert_json_error(r, 504)
            await server.stop(grace=None)
            r = await c.post("/completions", json={"model": "m", "prompt": "p"})
            assert_json_error(r, 503)
            assert "unavailable" in r.json()["error"]
    finally:
        gw.stop()
        await server.stop(grace=None)


def test_start_fails_fast_without_descriptor(tmp_path):
    env = {
        **os.environ,
        "GUARDMESH_DESCRIPTOR": str(tmp_path / "missing.pb"),
        "GUARDMESH_RUN_DIR": str(tmp_path),
    }
    done = subprocess.run([sys.executable, str(START)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "missing.pb" in done.stderr and "make proto" in done.stderr


def test_rendered_config_validates(tmp_path):
    env = {**os.environ, "GUARDMESH_RUN_DIR": str(tmp_path), "GUARDMESH_LISTEN_PORT": "18080"}
    done = subprocess.run([sys.executable, str(START), "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = (tmp_path / "envoy.yaml").read_text()
    assert "port_value: 18080" in rendered
    assert "address: 127.0.0.1, port_value: 9901" in rendered  # admin on loopback
