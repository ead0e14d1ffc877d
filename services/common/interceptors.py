"""One server interceptor for every service: request-id logging context and RPC metrics."""

import asyncio
import contextlib
import inspect
import time
import uuid

import grpc
import structlog
from prometheus_client import Counter, Histogram

RPCS = Counter("guardmesh_grpc_requests_total", "RPCs handled, by method and status code", ["method", "code"])
LATENCY = Histogram(
    "guardmesh_grpc_request_seconds",
    "RPC latency until the last response message, by method",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()  # set by context.abort / set_code
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"  # the caller went away
    return "UNKNOWN"  # what gRPC answers for an unhandled exception


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """Binds `x-request-id` (Envoy sets it; clients may) to every log line of the call, and
    counts each RPC by method and final status with its latency."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith("/grpc."):
            return handler  # health and reflection stay out of the metrics
        method = details.method.rsplit("/", 1)[-1]
        metadata = dict(details.invocation_metadata or ())
        request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex)

        def begin():
            structlog.contextvars.bind_contextvars(request_id=request_id)
            return time.perf_counter()

        def end(context, started, error=None):
            RPCS.labels(method, _code(context, error)).inc()
            LATENCY.labels(method).observe(time.perf_counter() - started)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                started = begin()
                try:
                    response = await inner(request, context)
                except BaseException as e:
                    end(context, started, e)
                    raise
                end(context, started)
                return response

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            # A coroutine writing through the context, never an async generator: a
            # generator left suspended at `yield` when the caller goes away would keep the
            # handler's work (a generation) alive until the garbage collector closed it.
            async def unary_stream(request, context):
                started = begin()
                try:
                    responses = inner_stream(request, context)
                    if inspect.isasyncgen(responses):
                        async with contextlib.aclosing(responses):
                            async for response in responses:
                                await context.write(response)
                    else:  # a handler that writes through the context itself
                        await responses
                except BaseException as e:
                    end(context, started, e)
                    raise
                end(context, started)

            return handler._replace(unary_stream=unary_stream)
        return handler
