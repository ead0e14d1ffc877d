"""The mesh spread over several hosts: separate network namespaces joined by a bridge.

Configuration only — the same code runs in one process tree (deploy/local/run.py), across
namespaces (here), and on Kubernetes; no address is hard-coded in any service: every
service binds its *_HOST setting and finds its peers through *_ADDRESS / *_HOST settings.

Hosts (one network namespace each, one veth on the bridge `gm-br0`, subnet below):

  gm-edge   gateway (Envoy) + orchestrator
  gm-gen    generation (Triton)
  gm-tox1   toxicity replica 1
  gm-tox2   toxicity replica 2

The orchestrator reaches both toxicity replicas through one target,
`ipv4:<tox1>:<port>,<tox2>:<port>`, balanced round-robin by its gRPC channel. The test
(root namespace) talks to the gateway at gm-edge's address and reads each replica's
Prometheus metrics at the replica's address. pii, injection and factuality are not
started: no request here needs them, so readiness is a completion answering 200 rather
than /readyz (which checks every dependency).

Shows: requests succeed through the gateway; load spreads over both replicas; cutting one
replica's link while requests flow fails only the calls caught on the cut link (clean
503/504 JSON, and they succeed on retry) while the other replica keeps serving; bringing
the link back restores the spread.

Needs root and iproute2 (`ip netns`); skipped otherwise. The subnet is
GUARDMESH_MULTIHOST_SUBNET [10.77.0.0/24]; traffic goes only to loopback and to it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402  (tests/integration is not a package)

pytestmark = [pytest.mark.integration, pytest.mark.multihost]

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "SmolLM2-135M-Instruct"
SUBNET = os.environ.get("GUARDMESH_MULTIHOST_SUBNET", "10.77.0.0/24")
BRIDGE = "gm-br0"
HOSTS = ["gm-edge", "gm-gen", "gm-tox1", "gm-tox2"]
# Each namespace has its own network stack, so every port is free there.
PORTS = {
    "gateway": 8080,
    "gateway_admin": 9901,
    "orchestrator": 50051,
    "orchestrator_metrics": 9101,
    "generation_grpc": 8001,
    "generation_http": 8000,
    "generation_metrics": 8002,
    "toxicity": 50063,
    "toxicity_metrics": 9113,
}
WORKERS = 4


@dataclass
class Multihost:
    net: netns.Network
    base_url: str
    api_key: str
    run_dir: Path
    processes: dict

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self) -> httpx.Client:
        # trust_env=False: never route the test subnet through a proxy from the environment.
        return httpx.Client(base_url=self.base_url, headers=self.headers(), timeout=30, trust_env=False)

    def replica_address(self, replica: str) -> str:
        return self.net.hosts[replica].address

    def score_calls(self, replica: str, timeout_s: float = 2.0) -> float:
        """The replica's `guardmesh_grpc_requests_total{method="Score",code="OK"}`."""
        url = f"http://{self.replica_address(replica)}:{PORTS['toxicity_metrics']}/metrics"
        text = httpx.get(url, timeout=timeout_s, trust_env=False).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "guardmesh_grpc_requests_total"
                    and sample.labels.get("method") == "Score"
                    and sample.labels.get("code") == "OK"
                ):
                    return sample.value
        return 0.0

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in sorted(self.run_dir.glob("*.log"))
        )


def _model_dirs() -> tuple[Path, Path]:
    model_dir = Path(
        os.environ.get("GUARDMESH_MODEL_DIR", Path.home() / ".cache/guardmesh/models/smollm2-135m-instruct-int8")
    )
    toxicity_dir = Path(os.environ.get("TOXICITY_MODEL_DIR", Path.home() / ".cache/guardmesh/models/toxicity"))
    for d in (model_dir, toxicity_dir):
        if not (d / "provenance.json").exists():
            pytest.fail(f"no model in {d}: run `make models` (make test does)")
    return model_dir, toxicity_dir


def _wait_serving(address: str, process, deadline: float, what: str, mesh: Multihost) -> None:
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{what} exited with {process.returncode}:\n{mesh.logs()}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    pytest.fail(f"{what} not SERVING at {address}:\n{mesh.logs()}")


def _wait_completion(mesh: Multihost, deadline: float) -> None:
    last = None
    with mesh.client() as client:
        while time.monotonic() < deadline:
            for name, p in mesh.processes.items():
                if p.poll() is not None:
                    pytest.fail(f"{name} exited with {p.returncode}:\n{mesh.logs()}")
            try:
                r = client.post("/completions", json={"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 1}, timeout=5)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.5)
    pytest.fail(f"no completion through the gateway (last: {last}):\n{mesh.logs()}")


@pytest.fixture(scope="module")
def multihost(tmp_path_factory):
    reason = netns.unavailable_reason(HOSTS, BRIDGE, SUBNET)
    if reason:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    model_dir, toxicity_dir = _model_dirs()
    run_dir = tmp_path_factory.mktemp("multihost")
    net = netns.Network(bridge=BRIDGE, subnet=SUBNET)
    started = time.monotonic()
    try:
        mesh = _start_mesh(net, run_dir, model_dir, toxicity_dir)
        print(f"\n[multihost] mesh ready on {SUBNET} in {time.monotonic() - started:.1f}s", flush=True)
    except BaseException:
        net.destroy()
        raise
    try:
        yield mesh
    finally:
        errors = net.destroy()
        assert not errors, f"teardown left things behind: {errors}"


def _start_mesh(net: netns.Network, run_dir: Path, model_dir: Path, toxicity_dir: Path) -> Multihost:
    net.create(HOSTS)
    edge, gen = net.hosts["gm-edge"].address, net.hosts["gm-gen"].address
    tox = [net.hosts["gm-tox1"].address, net.hosts["gm-tox2"].address]
    key = "gm-test-" + os.urandom(8).hex()
    base = {
        **os.environ,
        "PYTHONPATH": str(REPO / "services"),
        "PYTHONUNBUFFERED": "1",
        "GUARDMESH_API_KEYS": key,
    }
    python = sys.executable
    processes = {}
    for i, name in enumerate(["gm-tox1", "gm-tox2"]):
        env = {
            **base,
            "TOXICITY_HOST": tox[i],
            "TOXICITY_PORT": str(PORTS["toxicity"]),
            "TOXICITY_METRICS_PORT": str(PORTS["toxicity_metrics"]),
            "TOXICITY_MODEL_DIR": str(toxicity_dir),
        }
        processes[name] = net.start(name, [python, "-m", "toxicity"], env, run_dir / f"toxicity-{name}.log")
    processes["generation"] = net.start(
        "gm-gen",
        [python, "-m", "generation"],
        {
            **base,
            "GUARDMESH_MODEL_DIR": str(model_dir),
            "GENERATION_HOST": gen,
            "GENERATION_GRPC_PORT": str(PORTS["generation_grpc"]),
            "GENERATION_HTTP_PORT": str(PORTS["generation_http"]),
            "GENERATION_METRICS_PORT": str(PORTS["generation_metrics"]),
        },
        run_dir / "generation.log",
    )
    processes["orchestrator"] = net.start(
        "gm-edge",
        [python, "-m", "orchestrator"],
        {
            **base,
            "ORCHESTRATOR_HOST": edge,
            "ORCHESTRATOR_PORT": str(PORTS["orchestrator"]),
            "ORCHESTRATOR_METRICS_PORT": str(PORTS["orchestrator_metrics"]),
            # The test's own steady load is far above the default per-key rate.
            "ORCHESTRATOR_RATE_LIMIT_PER_MINUTE": "1000000",
            "ORCHESTRATOR_GENERATION_ADDRESS": f"{gen}:{PORTS['generation_grpc']}",
            "ORCHESTRATOR_TOXICITY_ADDRESS": "ipv4:" + ",".join(f"{a}:{PORTS['toxicity']}" for a in tox),
        },
        run_dir / "orchestrator.log",
    )
    processes["gateway"] = net.start(
        "gm-edge",
        [python, str(REPO / "gateway/start.py")],
        {
            **base,
            "GUARDMESH_RUN_DIR": str(run_dir),
            "GUARDMESH_LISTEN_HOST": edge,
            "GUARDMESH_LISTEN_PORT": str(PORTS["gateway"]),
            "GUARDMESH_ADMIN_PORT": str(PORTS["gateway_admin"]),
            "GUARDMESH_ORCHESTRATOR_HOST": edge,
            "GUARDMESH_ORCHESTRATOR_PORT": str(PORTS["orchestrator"]),
            "GUARDMESH_ENVOY_CONCURRENCY": "2",
        },
        run_dir / "gateway.log",
    )
    mesh = Multihost(
        net=net,
        base_url=f"http://{edge}:{PORTS['gateway']}",
        api_key=key,
        run_dir=run_dir,
        processes=processes,
    )
    deadline = time.monotonic() + 180
    for i, name in enumerate(["gm-tox1", "gm-tox2"]):
        _wait_serving(f"{tox[i]}:{PORTS['toxicity']}", processes[name], deadline, f"toxicity on {name}", mesh)
    _wait_completion(mesh, deadline)
    return mesh


def test_requests_succeed_through_the_gateway(multihost):
    with multihost.client() as client:
        r = client.post(
            "/completions", json={"model": MODEL_NAME, "prompt": "The capital of France is", "max_tokens": 5}
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] is not None
        r = client.post(
            "/completions",
            json={
                "model": MODEL_NAME,
                "prompt": "The capital of France is",
                "max_tokens": 5,
                "temperature": 0,
                "output": {"toxicity": True},
            },
        )
        assert r.status_code == 200, r.text
        r = client.post("/toxicity", json={"text": "Have a lovely day."})
        assert r.status_code == 200, r.text
        check = r.json()["checks"][0]
        assert 0 <= check["score"] <= 1


def test_load_spreads_over_both_replicas(multihost):
    before = {r: multihost.score_calls(r) for r in ("gm-tox1", "gm-tox2")}
    with multihost.client() as client:
        for i in range(40):
            r = client.post("/toxicity", json={"text": f"message number {i}"})
            assert r.status_code == 200, r.text
    served = {r: multihost.score_calls(r) - before[r] for r in before}
    print(f"\n[multihost] 40 /toxicity requests: per replica {served}", flush=True)
    assert sum(served.values()) == 40
    assert all(n >= 12 for n in served.values()), served  # round-robin: ~20 each


@dataclass
class Outcome:
    sent: float  # seconds since the link went down (negative: before)
    done: float
    status: int
    error_json: bool
    retries: int  # attempts it took to succeed after a failure (0: first try succeeded)
    retried_ok: bool


def _is_error_json(r: httpx.Response) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str | dict)


def test_link_down_fails_only_in_flight_calls_and_link_up_restores_the_spread(multihost):
    tox1 = multihost.net.hosts["gm-tox1"]
    stop = threading.Event()
    t_down = [float("inf")]
    outcomes: list[Outcome] = []
    bad: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        with multihost.client() as client:
            i = 0
            while not stop.is_set():
                i += 1
                sent = time.monotonic()
                try:
                    r = client.post("/toxicity", json={"text": f"worker {w} request {i}"})
                except httpx.HTTPError as e:
                    with lock:
                        bad.append(f"transport error {e!r}")
                    continue
                done = time.monotonic()
                ok = r.status_code == 200
                error_json = not ok and r.status_code in (503, 504) and _is_error_json(r)
                if not ok and not error_json:
                    with lock:
                        bad.append(f"{r.status_code} {r.text[:200]}")
                retries, retried_ok = 0, ok
                while not retried_ok and retries < 3:
                    retries += 1
                    rr = client.post("/toxicity", json={"text": f"worker {w} request {i} retry {retries}"})
                    retried_ok = rr.status_code == 200
                    if not retried_ok and not (rr.status_code in (503, 504) and _is_error_json(rr)):
                        with lock:
                            bad.append(f"retry: {rr.status_code} {rr.text[:200]}")
                with lock:
                    outcomes.append(Outcome(sent, done, r.status_code, error_json, retries, retried_ok))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(WORKERS)]
    for t in threads:
        t.start()
    try:
        time.sleep(2.0)
        before = {r: multihost.score_calls(r) for r in ("gm-tox1", "gm-tox2")}
        t_down[0] = time.monotonic()
        tox1.link_down()
        time.sleep(8.0)
        tox2_during = multihost.score_calls("gm-tox2") - before["gm-tox2"]
        t_up = time.monotonic()
        tox1.link_up()
        # The replica's metrics are reachable again at once; its first read is the baseline
        # (it may count calls it answered into the cut link).
        baseline, recovered_at = None, None
        deadline = t_up + 20
        while time.monotonic() < deadline:
            try:
                n = multihost.score_calls("gm-tox1", timeout_s=1)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if baseline is None:
                baseline = n
            elif n > baseline:
                recovered_at = time.monotonic()
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert not bad, bad[:10]
    assert outcomes
    for o in outcomes:
        o.sent, o.done = o.sent - t_down[0], o.done - t_down[0]
    failed = [o for o in outcomes if o.status != 200]
    after_down = [o for o in outcomes if o.sent >= 0 and o.status == 200]
    first_ok_after_down = min((o.done for o in after_down), default=None)
    last_failure_sent = max((o.sent for o in failed), default=None)
    after_up = [o for o in outcomes if o.sent >= t_up - t_down[0]]
    recovery_s = None if recovered_at is None else recovered_at - t_up
    print(
        f"\n[multihost] link-down run: {len(outcomes)} requests from {WORKERS} threads; "
        f"before the cut tox1/tox2 had {before}; {len(failed)} failed "
        f"({sorted((o.status, round(o.sent, 2), round(o.done, 2)) for o in failed)} as (status, sent, done) "
        f"s after the cut), all retried OK: {all(o.retried_ok for o in failed)} "
        f"(retries {[o.retries for o in failed]}); first success sent after the cut finished at "
        f"{first_ok_after_down and round(first_ok_after_down, 2)}s; tox2 served {tox2_during:.0f} calls "
        f"while tox1 was cut (8 s); tox1 served again {recovery_s and round(recovery_s, 2)}s after link up; "
        f"{len(after_up)} requests sent after link up, {sum(o.status != 200 for o in after_up)} failed",
        flush=True,
    )
    # Every answer is a success or a clean JSON 503/504, and every failed request succeeds on retry.
    assert all(o.status == 200 or o.error_json for o in outcomes)
    assert all(o.retried_ok for o in failed), [(o.status, o.sent, o.retries) for o in failed]
    # Only calls caught on the cut link fail: about one per thread (each thread has one call in
    # flight; a call routed to tox1 before the channel notices the cut hangs until the check
    # deadline, 5 s), all sent before the channel gave up on tox1.
    assert len(failed) <= 2 * WORKERS, len(failed)
    assert last_failure_sent is None or last_failure_sent < 7.0, last_failure_sent
    # The other replica keeps serving at once.
    assert first_ok_after_down is not None and first_ok_after_down < 2.0, first_ok_after_down
    assert tox2_during > 0
    # Link up: no failures, and tox1 serves again quickly (reconnect backoff is capped at 1 s).
    assert all(o.status == 200 for o in after_up)
    assert recovery_s is not None and recovery_s < 15.0, f"tox1 did not serve again within 20 s:\n{multihost.logs()}"

    # The spread is back.
    before = {r: multihost.score_calls(r) for r in ("gm-tox1", "gm-tox2")}
    with multihost.client() as client:
        for i in range(20):
            r = client.post("/toxicity", json={"text": f"after recovery {i}"})
            assert r.status_code == 200, r.text
    served = {r: multihost.score_calls(r) - before[r] for r in before}
    print(f"[multihost] 20 /toxicity requests after recovery: per replica {served}", flush=True)
    assert all(n >= 5 for n in served.values()), served
