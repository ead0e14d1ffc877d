"""Starts the whole mesh on this machine under supervisord and stays in the foreground.

Used by `make run` (logs to the terminal) and by the integration tests (logs to
files in the run dir). Ctrl-C / SIGTERM stops every service.

Environment (defaults in brackets): GUARDMESH_API_KEYS [a new development key,
printed], GUARDMESH_LISTEN_PORT [8080], GUARDMESH_RUN_DIR [<repo>/.run],
GUARDMESH_LOG_TO_FILES [0], and every service's own settings (ORCHESTRATOR_*,
GENERATION_*, GUARDMESH_* of the gateway), whose ports are wired together here.
"""

import os
import secrets
import signal
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("supervisord.conf.tmpl")


def mesh_environment(base: dict[str, str]) -> dict[str, str]:
    """Fills in defaults and wires the services' addresses to each other."""
    env = dict(base)
    env.setdefault("GUARDMESH_RUN_DIR", str(REPO / ".run"))
    env.setdefault("GUARDMESH_LISTEN_PORT", "8080")
    env.setdefault("GUARDMESH_ADMIN_PORT", "9901")
    env.setdefault("ORCHESTRATOR_PORT", "50051")
    env.setdefault("ORCHESTRATOR_METRICS_PORT", "9101")
    env.setdefault("GENERATION_GRPC_PORT", "8001")
    env.setdefault("GENERATION_HTTP_PORT", "8000")
    env.setdefault("GENERATION_METRICS_PORT", "8002")
    env.setdefault("PII_PORT", "50061")
    env.setdefault("PII_METRICS_PORT", "9111")
    env.setdefault("INJECTION_PORT", "50062")
    env.setdefault("INJECTION_METRICS_PORT", "9112")
    env.setdefault("TOXICITY_PORT", "50063")
    env.setdefault("TOXICITY_METRICS_PORT", "9113")
    env.setdefault("FACTUALITY_PORT", "50064")
    env.setdefault("FACTUALITY_METRICS_PORT", "9114")
    env["GUARDMESH_ORCHESTRATOR_PORT"] = env["ORCHESTRATOR_PORT"]
    env["ORCHESTRATOR_PII_ADDRESS"] = f"127.0.0.1:{env['PII_PORT']}"
    env["ORCHESTRATOR_INJECTION_ADDRESS"] = f"127.0.0.1:{env['INJECTION_PORT']}"
    env["ORCHESTRATOR_TOXICITY_ADDRESS"] = f"127.0.0.1:{env['TOXICITY_PORT']}"
    env["ORCHESTRATOR_FACTUALITY_ADDRESS"] = f"127.0.0.1:{env['FACTUALITY_PORT']}"
    env["ORCHESTRATOR_GENERATION_ADDRESS"] = f"127.0.0.1:{env['GENERATION_GRPC_PORT']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "services"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def render_config(env: dict[str, str]) -> Path:
    run_dir = Path(env["GUARDMESH_RUN_DIR"])
    run_dir.mkdir(parents=True, exist_ok=True)
    to_files = env.get("GUARDMESH_LOG_TO_FILES", "0") == "1"
    config = string.Template(TEMPLATE.read_text()).substitute(
        RUN_DIR=run_dir,
        REPO=REPO,
        PYTHON=sys.executable,
        # In the foreground every service logs to the terminal; otherwise one file each.
        LOG_TARGET=f"{run_dir}/%(program_name)s.log" if to_files else "/dev/stdout",
        LOG_MAXBYTES="50MB" if to_files else "0",
    )
    path = run_dir / "supervisord.conf"
    path.write_text(config)
    return path


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def main() -> int:
    env = mesh_environment(dict(os.environ))
    if not env.get("GUARDMESH_API_KEYS"):
        env["GUARDMESH_API_KEYS"] = "gm-dev-" + secrets.token_urlsafe(24)
        print(f"GUARDMESH_API_KEYS is unset; development key: {env['GUARDMESH_API_KEYS']}", flush=True)
    config = render_config(env)
    supervisord = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(config)], env=env)

    def stop(signum, frame):
        supervisord.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    base = f"http://127.0.0.1:{env['GUARDMESH_LISTEN_PORT']}"
    if wait_ready(f"{base}/readyz", supervisord, timeout_s=float(env.get("GUARDMESH_READY_TIMEOUT_S", "180"))):
        print(f"guardmesh is ready at {base}  (Ctrl-C stops it)", flush=True)
        print(
            f"  curl {base}/completions -H 'Authorization: Bearer <key>' -H 'Content-Type: application/json' "
            """-d '{"model": "SmolLM2-135M-Instruct", "prompt": "The capital of France is", "max_tokens": 20}'""",
            flush=True,
        )
    elif supervisord.poll() is None:
        print(f"guardmesh is not ready yet; see {base}/readyz and the logs above", flush=True)
    return supervisord.wait()


if __name__ == "__main__":
    sys.exit(main())
