"""Generation service: a real Triton server (PyTriton) hosting the model as a decoupled model.

settings → logging → load model (ONNX Runtime) → start the scheduler → serve through Triton.
"""

import _thread
import os
import signal
import socket
import sys
import threading
import time

import structlog
from prometheus_client import Gauge, start_http_server

from common.logging import configure_logging
from generation.settings import GenerationSettings

log = structlog.get_logger()


# ONNX Runtime execution provider per GENERATION_DEVICE; the model code is the same.
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _wait_for_free_ports(host: str, ports: list[int], timeout_s: float) -> None:
    """After a crash the previous Triton may still hold our ports for a few seconds."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit(f"port {port} is still in use; exiting so the supervisor retries")
                    time.sleep(0.2)


def _drain_then_stop(scheduler, seconds: float) -> None:
    """SIGTERM: refuse new work, let running streams finish (bounded), then stop Triton."""
    scheduler.draining = True
    log.info("draining", active=scheduler.active, seconds=seconds)
    deadline = time.monotonic() + seconds
    while (scheduler.active or scheduler.waiting) and time.monotonic() < deadline:
        time.sleep(0.1)
    _thread.interrupt_main()  # PyTriton's serve() exits cleanly on KeyboardInterrupt


def main() -> None:
    settings = GenerationSettings()
    configure_logging("generation", settings.log_level)
    # Triton's Python backend stub links against libpython; pyenv builds keep it here.
    os.environ["LD_LIBRARY_PATH"] = f"{sys.base_prefix}/lib:" + os.environ.get("LD_LIBRARY_PATH", "")

    # Imported late: PyTriton and ONNX Runtime are heavy and only needed once configured.
    from pytriton.model_config import ModelConfig
    from pytriton.triton import Triton, TritonConfig

    from generation.onnx_model import OnnxCausalLM
    from generation.scheduler import Scheduler
    from generation.tokenizer import Tokenizer
    from generation.triton_model import (
        CANCEL_INPUTS,
        CANCEL_MODEL,
        CANCEL_OUTPUTS,
        INPUTS,
        OUTPUTS,
        CancelModel,
        CompletionModel,
    )

    if not (settings.model_dir / "provenance.json").exists():
        sys.exit(f"model not found in {settings.model_dir}: run `make models`")
    tokenizer = Tokenizer(settings.model_dir)
    model = OnnxCausalLM(
        settings.model_dir,
        providers=PROVIDERS[settings.device],
        intra_op_threads=settings.threads,
        max_batch=settings.max_batch,
        max_len=settings.max_len,
    )
    scheduler = Scheduler(
        model, tokenizer.eos_token_ids, max_waiting=settings.max_waiting, prefill_chunk=settings.prefill_chunk
    )
    scheduler.start()

    active = Gauge("generation_active_sequences", "Sequences holding a KV-cache slot")
    active.set_function(lambda: scheduler.active)
    waiting = Gauge("generation_waiting_sequences", "Sequences waiting for a slot")
    waiting.set_function(lambda: scheduler.waiting)
    start_http_server(settings.metrics_port + 1, addr=settings.host)

    _wait_for_free_ports(settings.host, [settings.grpc_port, settings.http_port, settings.metrics_port], 30.0)
    config = TritonConfig(
        grpc_address=settings.host,
        grpc_port=settings.grpc_port,
        http_address=settings.host,
        http_port=settings.http_port,
        metrics_port=settings.metrics_port,
        log_verbose=0,
        # Short: draining happens before Triton is stopped (below), and when this process
        # dies Triton gets SIGTERM (PDEATHSIG) and must free its ports and fail its
        # streams quickly instead of waiting for a backend that is gone.
        exit_timeout_secs=3,
    )

    stopping = threading.Event()

    def on_sigterm(signum, frame):
        stopping.set()
        threading.Thread(target=_drain_then_stop, args=(scheduler, settings.drain_seconds), daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    with Triton(config=config) as triton:
        completions = CompletionModel(
            scheduler,
            tokenizer,
            model.max_len,
            model.vocab_size,
            heartbeat_s=settings.heartbeat_s,
            coalesce_s=settings.coalesce_s,
            coalesce_above=settings.coalesce_above,
        )
        triton.bind(
            model_name=settings.model_name,
            infer_func=completions,
            inputs=INPUTS,
            outputs=OUTPUTS,
            config=ModelConfig(batching=False, decoupled=True),
            strict=True,
        )
        triton.bind(
            model_name=CANCEL_MODEL,
            infer_func=CancelModel(completions),
            inputs=CANCEL_INPUTS,
            outputs=CANCEL_OUTPUTS,
            config=ModelConfig(batching=False),
            strict=True,
        )
        log.info("serving", model=settings.model_name, grpc_port=settings.grpc_port)
        triton.serve()
    scheduler.stop()
    if not stopping.is_set():  # Triton itself died (its log says why): exit so that it shows
        log.error("triton server exited unexpectedly")
        sys.exit(1)
    log.info("stopped")


if __name__ == "__main__":
    main()
