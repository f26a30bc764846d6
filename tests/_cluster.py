"""A real multi-node Ray cluster on one machine, made of ``ray start --block`` subprocesses.

Each node is one ``ray start ... --block`` process started in its own session (process
group), with its own temp dir, CPU count and a custom resource naming it. The cluster
only ever signals processes it started: a node's ``ray start`` process, its process
group (GCS, raylet, agents) and every process descended from it (Ray puts worker
processes into process groups of their own, so they are found by walking ``/proc``).
It never calls ``ray stop`` or kills by name, so other Ray instances on the machine are
left alone.

Example:
    >>> with LocalCluster(tmp_path) as cluster:           # doctest: +SKIP
    ...     cluster.add_node("head_node", head=True)
    ...     cluster.add_node("worker_node")
    ...     cluster.wait_for_nodes({"head_node", "worker_node"})
    ...     cluster.kill_node("worker_node")
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Node", "LocalCluster", "free_port", "descendants"]

RAY = str(Path(sys.executable).with_name("ray"))
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time)`` of a living process, ``None`` when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            kids.setdefault(st[0], []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    """Every living process descended from ``pid`` (not ``pid`` itself), parents first."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Node:
    """One ``ray start --block`` process and what it spawned."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path
    seen: dict[int, int] = field(default_factory=dict)

    def track(self) -> list[int]:
        """Remember the node's current descendants (pid and start time) and return the
        remembered ones that still run (the same process, not a recycled pid)."""
        if self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                if (st := _stat(pid)) is not None:
                    self.seen[pid] = st[1]
        return [pid for pid, start in self.seen.items() if (st := _stat(pid)) is not None and st[1] == start]

    def titles(self) -> list[str]:
        """Command lines (Ray sets them to ``ray::Class.method`` while an actor works) of
        the node's living processes."""
        out = []
        for pid in self.track():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                continue
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the node's process group and every process it spawned (hard crash by default)."""
        self.track()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        # Ray puts workers into process groups of their own: signal them one by one.
        deadline = time.time() + 30
        while (pids := self.track()) and time.time() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


class LocalCluster:
    """Start, inspect and tear down a multi-node Ray cluster on this machine.

    Args:
        root: Folder for the nodes' temp dirs and logs (keep it short: Ray's socket paths
            must stay under about 100 characters).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.nodes: dict[str, Node] = {}
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def add_node(self, name: str, *, head: bool = False, num_cpus: int = 1) -> Node:
        """Start a node with ``num_cpus`` CPUs and the custom resource ``{name: 1}``."""
        temp = self.root / name
        temp.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        args = [
            RAY, "start", "--block", f"--num-cpus={num_cpus}", f"--resources={json.dumps({name: 1})}",
            f"--node-ip-address={HOST}", f"--temp-dir={temp}", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--object-store-memory={200 * 1024**2}",
        ]
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            args += [f"--address={self.address}"]
        with open(log, "w") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        node = Node(name, proc, temp, log)
        self.nodes[name] = node
        return node

    def run_python(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` in a fresh interpreter connected to this cluster; return its stdout."""
        prelude = f"import ray, json\nray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
        r = subprocess.run([sys.executable, "-c", prelude + code], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"python against {self.address} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
        return r.stdout

    def alive_nodes(self) -> dict[str, str]:
        """``{node name: Ray node id}`` of the alive nodes (named by their custom resource)."""
        out = self.run_python(
            "print('NODES=' + json.dumps([{'id': n['NodeID'], 'res': list(n['Resources'])} for n in ray.nodes() if n['Alive']]))"
        )
        nodes = json.loads([line for line in out.splitlines() if line.startswith("NODES=")][-1][len("NODES="):])
        return {name: n["id"] for n in nodes for name in n["res"] if name in self.nodes}

    def wait_for_nodes(self, names: set[str], timeout: float = 120) -> dict[str, str]:
        """Wait until exactly ``names`` are alive; return their node ids."""
        deadline = time.time() + timeout
        alive: dict[str, str] = {}
        while time.time() < deadline:
            for node in self.nodes.values():
                if node.proc.poll() is not None and node.name in names:
                    raise RuntimeError(f"node {node.name} exited early:\n{node.log.read_text()[-3000:]}")
            try:
                alive = self.alive_nodes()
            except (RuntimeError, subprocess.TimeoutExpired):
                alive = {}
            if set(alive) == set(names):
                return alive
            time.sleep(2)
        raise TimeoutError(f"nodes {sorted(names)} not all alive after {timeout} s (alive: {alive})")

    def kill_node(self, name: str) -> None:
        """Hard-kill one node (SIGKILL to every process it started), like a machine dying."""
        self.nodes[name].kill(signal.SIGKILL)

    def shutdown(self) -> None:
        """Stop every node this cluster started, workers first, the head last."""
        for node in sorted(self.nodes.values(), key=lambda n: n.name == "head_node"):
            node.kill(signal.SIGKILL)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
