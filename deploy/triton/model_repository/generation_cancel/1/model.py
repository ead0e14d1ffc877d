"""generation_cancel for a stock Triton: stops a running completion by its request id.

Triton runs each Python-backend model in its own process, so the running completions live
in SmolLM2-135M-Instruct's process; this model asks it over the Unix socket
GUARDMESH_CANCEL_SOCKET (environment, else this model's config parameter). An unknown id, or
no completion model listening, answers false — as services/generation's CancelModel does.
"""

import json
import os
from multiprocessing.connection import Client

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_CANCEL_SOCKET = "/tmp/guardmesh-generation-cancel.sock"


def _parameter(model_config: dict, key: str) -> str:
    value = (model_config.get("parameters") or {}).get(key) or {}
    return value.get("string_value", "") if isinstance(value, dict) else str(value)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.socket = (
            os.environ.get("GUARDMESH_CANCEL_SOCKET")
            or _parameter(config, "GUARDMESH_CANCEL_SOCKET")
            or DEFAULT_CANCEL_SOCKET
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "request_id").as_numpy().reshape(-1)[0]
            request_id = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            cancelled = np.array([self._cancel(request_id)], dtype=np.bool_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("cancelled", cancelled)]))
        return responses

    def _cancel(self, request_id: str) -> bool:
        try:
            with Client(self.socket, family="AF_UNIX") as conn:
                conn.send(request_id)
                if not conn.poll(5):
                    return False
                return bool(conn.recv())
        except (OSError, EOFError):
            return False  # no completion model listening: nothing is running
