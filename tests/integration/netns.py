"""A throwaway network of Linux network namespaces for multi-host tests (iproute2's `ip`).

Each "host" is a namespace with one veth interface (`gm0`) whose peer sits on a bridge in
the root namespace; the bridge holds the subnet's `.1` so the test itself (in the root
namespace) reaches every host. Only namespaces, veths and the bridge created here are
ever removed, and only addresses of the subnet assigned here are used.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

INSIDE_IFNAME = "gm0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def unavailable_reason(names: list[str], bridge: str, subnet: str) -> str | None:
    """Why this machine cannot host the test network, or None when it can."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install -y iproute2)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    existing = _ip("netns", "list", check=False).stdout.split()
    taken = [n for n in names if n in existing]
    if taken:
        return f"network namespaces {taken} already exist (another run, or left over: `ip netns del` them)"
    if _ip("link", "show", bridge, check=False).returncode == 0:
        return f"interface {bridge} already exists (another run, or left over: `ip link del {bridge}`)"
    net = ipaddress.ip_network(subnet)
    for line in _ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            addr = ipaddress.ip_interface(fields[fields.index("inet") + 1])
            if addr.network.overlaps(net):
                return f"{subnet} is already used on this machine ({line.strip()})"
    probe = f"gm-probe-{os.getpid()}"
    created = _ip("netns", "add", probe, check=False)
    if created.returncode != 0:
        return f"cannot create a network namespace: {created.stderr.strip()}"
    deleted = _ip("netns", "del", probe, check=False)
    if deleted.returncode != 0:
        return f"cannot delete a network namespace: {deleted.stderr.strip()}"
    return None


@dataclass
class Host:
    name: str  # the namespace
    address: str  # its address on the test subnet
    host_veth: str  # the veth end on the bridge (root namespace)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.exec_prefix(), *cmd], capture_output=True, text=True, timeout=20, check=True)

    def link_down(self) -> None:
        """Cuts this host off the network (its interface loses carrier; no RST is sent)."""
        self.run("ip", "link", "set", INSIDE_IFNAME, "down")

    def link_up(self) -> None:
        self.run("ip", "link", "set", INSIDE_IFNAME, "up")  # the kernel restores the subnet route


@dataclass
class Network:
    bridge: str
    subnet: str
    hosts: dict[str, Host] = field(default_factory=dict)
    _created_namespaces: list[str] = field(default_factory=list)
    _bridge_created: bool = False
    _processes: list[subprocess.Popen] = field(default_factory=list)

    def create(self, names: list[str]) -> None:
        net = ipaddress.ip_network(self.subnet)
        prefix = net.prefixlen
        addresses = net.hosts()
        gateway = str(next(addresses))
        _ip("link", "add", self.bridge, "type", "bridge")
        self._bridge_created = True
        _ip("addr", "add", f"{gateway}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(names):
            address = str(next(addresses))
            host_veth = f"gmh{i}-{name.removeprefix('gm-')}"[:15]
            _ip("netns", "add", name)
            self._created_namespaces.append(name)
            _ip("link", "add", host_veth, "type", "veth", "peer", "name", INSIDE_IFNAME, "netns", name)
            _ip("link", "set", host_veth, "master", self.bridge)
            _ip("link", "set", host_veth, "up")
            host = Host(name, address, host_veth)
            host.run("ip", "link", "set", "lo", "up")
            host.run("ip", "addr", "add", f"{address}/{prefix}", "dev", INSIDE_IFNAME)
            host.run("ip", "link", "set", INSIDE_IFNAME, "up")
            self.hosts[name] = host

    def start(self, host: str, cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
        """Starts `cmd` inside the namespace, in its own process group, logging to `log_path`."""
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*self.hosts[host].exec_prefix(), *cmd],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._processes.append(process)
        return process

    def stop_processes(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process group started here, then SIGKILL what is left."""
        for p in self._processes:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self._processes:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self._processes:
            _signal_group(p, signal.SIGKILL)  # stragglers of the group (Triton) even if the leader exited
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # Anything still running inside our namespaces was started by us (directly or not).
        for name in self._created_namespaces:
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass

    def destroy(self) -> list[str]:
        """Removes the namespaces (their veths go with them) and the bridge; returns any errors."""
        errors = []
        self.stop_processes()
        for name in reversed(self._created_namespaces):
            r = _ip("netns", "del", name, check=False)
            if r.returncode != 0:
                errors.append(f"ip netns del {name}: {r.stderr.strip()}")
        self._created_namespaces.clear()
        for host in self.hosts.values():  # normally gone with the namespace
            if _ip("link", "show", host.host_veth, check=False).returncode == 0:
                _ip("link", "del", host.host_veth, check=False)
        if self._bridge_created:
            r = _ip("link", "del", self.bridge, check=False)
            if r.returncode != 0:
                errors.append(f"ip link del {self.bridge}: {r.stderr.strip()}")
            self._bridge_created = False
        return errors


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the leader's pid
    except (ProcessLookupError, PermissionError):
        pass
