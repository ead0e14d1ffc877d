"""The one gRPC server bootstrap: aio server, health, reflection, metrics, SIGTERM drain."""

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from common.interceptors import ObservabilityInterceptor

log = structlog.get_logger()

Registrar = Callable[[grpc.aio.Server], None]


async def serve(
    *,
    host: str,
    port: int,
    metrics_port: int,
    register: Iterable[Registrar],
    service_names: Iterable[str],
    warm_up: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    drain_seconds: float = 10.0,
    reconnect_every_s: float | None = 60.0,
) -> None:
    """Serves until SIGTERM/SIGINT, then drains in-flight calls for up to `drain_seconds`.

    `reconnect_every_s` bounds a client connection's age (None for servers of long streams,
    whose streams must not be cut). Health stays NOT_SERVING until `warm_up` (e.g. model loading) has finished, so
    readiness probes and the orchestrator never route to a cold service.
    """
    options = [
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        # Envoy caps REST headers at 8 KiB (431 beyond); leave room so gRPC's own soft
        # limit never turns a large but allowed header into a misleading error.
        ("grpc.max_metadata_size", 16 * 1024),
        ("grpc.absolute_max_metadata_size", 32 * 1024),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ]
    if reconnect_every_s:
        # Clients reconnect this often (after draining), so their round-robin over a
        # headless Service picks up replicas an autoscaler added.
        options += [
            ("grpc.max_connection_age_ms", int(reconnect_every_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(drain_seconds * 1000)),
        ]
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor()], options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for add in register:
        add(server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen on {address}")
    start_http_server(metrics_port, addr=host)
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    log.info("listening", address=address, metrics_port=metrics_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if warm_up is not None:
        try:
            await warm_up()
        except BaseException:
            await server.stop(grace=None)  # stop cleanly before the loop closes, then fail
            raise
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving")

    await stop.wait()
    log.info("draining", seconds=drain_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=drain_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")
