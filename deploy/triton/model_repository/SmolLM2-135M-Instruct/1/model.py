"""guardmesh generation as a stock Triton Python-backend model (decoupled, streaming).

The same code as the PyTriton service (services/generation): OnnxCausalLM + the
continuous-batching Scheduler + Tokenizer, and CompletionModel for each request — so
validation (request.parse_request), stop strings (stops.StopMatcher), incremental
detokenisation, heartbeats and error responses are exactly the service's. This file only
adapts Triton's Python-backend API to it:

- initialize(): reads the model config's `parameters` into the environment (a variable
  already set wins), puts GUARDMESH_SERVICES_DIR on sys.path, builds the model from
  GenerationSettings, and runs CompletionModel's async generators on one event loop thread.
- execute(): decoupled — each request is streamed from that loop through its response
  sender; the final flag follows the last response. A request Triton marks cancelled (its
  client went away) frees its KV-cache slot at the next response (at most a heartbeat later).
- generation_cancel (../../generation_cancel) runs in another process: it asks this model
  over a Unix socket (GUARDMESH_CANCEL_SOCKET) to cancel by request id.
"""

import asyncio
import json
import os
import sys
import threading
import types
from multiprocessing.connection import Listener
from pathlib import Path

import triton_python_backend_utils as pb_utils

INPUT_NAMES = ("prompt", "parameters")
DEFAULT_CANCEL_SOCKET = "/tmp/guardmesh-generation-cancel.sock"
# ONNX Runtime execution provider per GENERATION_DEVICE (as in services/generation/__main__.py).
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _apply_parameters(model_config: dict) -> None:
    """Config parameters become environment defaults (GenerationSettings reads the environment)."""
    for key, value in (model_config.get("parameters") or {}).items():
        text = value.get("string_value", "") if isinstance(value, dict) else str(value)
        if text and not os.environ.get(key):
            os.environ[key] = text


def _import_path() -> None:
    services = os.environ.get("GUARDMESH_SERVICES_DIR", "")
    if not services:
        # Running from a checkout: <repo>/deploy/triton/model_repository/<model>/1/model.py.
        services = str(Path(__file__).resolve().parents[5] / "services")
    if services not in sys.path:
        sys.path.insert(0, services)
    try:
        import pytriton.model_config  # noqa: F401
    except ImportError:
        # generation.triton_model declares its tensors with PyTriton's Tensor, which a stock
        # Triton host does not need: a stand-in with the same fields.
        from dataclasses import dataclass

        @dataclass(frozen=True)
        class Tensor:
            name: str
            dtype: object
            shape: tuple

        package = types.ModuleType("pytriton")
        module = types.ModuleType("pytriton.model_config")
        module.Tensor = Tensor
        package.model_config = module
        sys.modules.setdefault("pytriton", package)
        sys.modules.setdefault("pytriton.model_config", module)


class TritonPythonModel:
    def initialize(self, args):
        _apply_parameters(json.loads(args["model_config"]))
        _import_path()
        from generation.onnx_model import OnnxCausalLM
        from generation.scheduler import Scheduler
        from generation.settings import GenerationSettings
        from generation.tokenizer import Tokenizer
        from generation.triton_model import CompletionModel

        settings = GenerationSettings()
        tokenizer = Tokenizer(settings.model_dir)
        model = OnnxCausalLM(
            settings.model_dir,
            providers=PROVIDERS[settings.device],
            intra_op_threads=settings.threads,
            max_batch=settings.max_batch,
            max_len=settings.max_len,
        )
        self.scheduler = Scheduler(
            model, tokenizer.eos_token_ids, max_waiting=settings.max_waiting, prefill_chunk=settings.prefill_chunk
        )
        self.scheduler.start()
        self.completions = CompletionModel(
            self.scheduler, tokenizer, model.max_len, model.vocab_size, settings.heartbeat_s
        )
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name="guardmesh-streams", daemon=True)
        self._loop_thread.start()
        self._listener = self._listen(os.environ.get("GUARDMESH_CANCEL_SOCKET") or DEFAULT_CANCEL_SOCKET)

    def execute(self, requests):
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._stream(request), self.loop)
        return None  # decoupled: every response goes through the request's sender

    async def _stream(self, request) -> None:
        sender = request.get_response_sender()
        inputs = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1) for name in INPUT_NAMES}
        stream = self.completions([inputs])
        try:
            async for (response,) in stream:
                if request.is_cancelled():
                    break
                tensors = [pb_utils.Tensor(name, value) for name, value in response.items()]
                sender.send(pb_utils.InferenceResponse(output_tensors=tensors))
        except Exception as e:  # never leave a stream without its final flag
            sender.send(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"INTERNAL: {e}")))
        finally:
            await stream.aclose()  # frees the slot if the stream ended early
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _listen(self, path: str) -> Listener:
        """Answers generation_cancel: receives a request id, sends whether it was running."""
        if os.path.exists(path):
            os.unlink(path)  # left by a previous instance
        listener = Listener(path, family="AF_UNIX")

        def serve() -> None:
            while True:
                try:
                    with listener.accept() as conn:
                        request_id = conn.recv()
                        done = asyncio.run_coroutine_threadsafe(self._cancel(str(request_id)), self.loop)
                        conn.send(bool(done.result(timeout=5)))
                except OSError:
                    return  # listener closed by finalize()
                except Exception:
                    continue  # one bad caller must not stop cancellation for everyone

        threading.Thread(target=serve, name="guardmesh-cancel", daemon=True).start()
        return listener

    async def _cancel(self, request_id: str) -> bool:
        return self.completions.cancel(request_id)

    def finalize(self):
        self._listener.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout=5)
        self.scheduler.stop()
