"""The shared server interceptor on a real in-process gRPC server (health service as the RPC)."""

import asyncio
import gc

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from common.interceptors import ObservabilityInterceptor


class Health(health_pb2_grpc.HealthServicer):
    """A servicer whose Check answers by the service name asked for."""

    async def Check(self, request, context):
        if request.service == "bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad service")
        if request.service == "boom":
            raise RuntimeError("boom")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def count(code: str) -> float:
    return REGISTRY.get_sample_value("guardmesh_grpc_requests_total", {"method": "Check", "code": code}) or 0.0


@pytest.fixture
async def stub():
    # Served under a non-"/grpc." path so the interceptor counts it like a service RPC.
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor()])
    handler = grpc.method_handlers_generic_handler(
        "test.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                Health().Check,
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel.unary_unary(
        "/test.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    await channel.close()
    await server.stop(None)


async def test_rpcs_are_counted_by_final_status(stub):
    before = {code: count(code) for code in ("OK", "INVALID_ARGUMENT", "UNKNOWN")}
    await stub(health_pb2.HealthCheckRequest(service="ok"))
    for service in ("bad", "boom"):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub(health_pb2.HealthCheckRequest(service=service))
    assert {code: count(code) - before[code] for code in before} == {"OK": 1, "INVALID_ARGUMENT": 1, "UNKNOWN": 1}
    assert health.SERVICE_NAME.startswith("grpc.")  # real health checks are excluded from the metrics


class Ticker:
    """Server-streaming handlers, one per style, that tick until the caller goes away and
    record when their work ended (as a generation's finally block would)."""

    def __init__(self):
        self.ended = asyncio.Event()

    async def generator(self, request, context):
        try:
            while True:
                # The write happens outside the generator (in gRPC or the interceptor),
                # so that is where the caller's cancellation usually lands.
                yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        finally:
            self.ended.set()

    async def writer(self, request, context):
        try:
            while True:
                await context.write(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING))
        finally:
            self.ended.set()


@pytest.mark.parametrize("style", ["generator", "writer"])
async def test_a_cancelled_stream_ends_its_handler_at_once(style):
    ticker = Ticker()
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor()])
    handler = grpc.method_handlers_generic_handler(
        "test.Ticker",
        {
            "Tick": grpc.unary_stream_rpc_method_handler(
                getattr(ticker, style),
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gc.disable()  # the handler must end by itself, not when a collector finds it
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            tick = channel.unary_stream(
                "/test.Ticker/Tick",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            call = tick(health_pb2.HealthCheckRequest())
            for _ in range(50):
                await call.read()
            call.cancel()
            await asyncio.wait_for(ticker.ended.wait(), 5)
    finally:
        gc.enable()
        await server.stop(None)
