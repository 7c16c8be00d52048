"""Process-tree bookkeeping for scripts/bench-peers, from /proc only (Linux).

- `ProcTable`: one read of every /proc/PID/stat (pid, parent, state, CPU, RSS).
- `Sampler`: a thread that, every 100 ms, sums the resident memory of a run's worker
  processes (the workers' trees minus the MCP servers) and, separately, of its MCP
  servers, and keeps the peaks. A server is a process whose environment holds
  BENCH_PEERS_SERVER_TAG=<the run's tag> (every system puts it into its servers' env).
- `tree_cpu`: CPU seconds (user + system) of the workers' trees, including every child
  the tree already reaped (cutime/cstime): the difference of two readings is what the
  trees spent in between, servers included, even those that lived less than a sample.
  Processes reaped by init instead (orphans) are missed; no system here makes any.
- `tagged`: the live processes whose environment holds a server tag (leftover count).

Caveats: RSS is sampled, so a peak shorter than 100 ms can be missed; a process's RSS
counts shared pages once per process (Celery's forked children share much of theirs).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ENV_KEY = b"BENCH_PEERS_SERVER_TAG="


@dataclass
class Stat:
    pid: int
    ppid: int
    state: str
    start: int  # start time in ticks since boot: (pid, start) names a process uniquely
    cpu_ticks: int  # utime + stime + cutime + cstime
    rss: int  # bytes


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return Stat(
            pid=pid,
            ppid=int(rest[1]),
            state=rest[0].decode(),
            start=int(rest[19]),
            cpu_ticks=int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
            rss=int(rest[21]) * PAGE,
        )
    except (IndexError, ValueError):
        return None


class ProcTable:
    """Every process on the machine at one moment."""

    def __init__(self) -> None:
        self.stats: dict[int, Stat] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                s = read_stat(int(name))
                if s is not None:
                    self.stats[s.pid] = s

    def descendants(self, roots: list[int]) -> list[Stat]:
        """The roots and everything below them (by parent pid)."""
        children: dict[int, list[int]] = {}
        for s in self.stats.values():
            children.setdefault(s.ppid, []).append(s.pid)
        out, todo, seen = [], [r for r in roots if r in self.stats], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            out.append(self.stats[pid])
            todo.extend(children.get(pid, []))
        return out


def environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read()
    except OSError:
        return False


def tagged(tag_prefix: str) -> list[int]:
    """Live (not zombie) processes whose server tag starts with `tag_prefix`."""
    needle = ENV_KEY + tag_prefix.encode()
    out = []
    for s in ProcTable().stats.values():
        if s.state != "Z" and s.pid != os.getpid() and environ_has(s.pid, needle):
            out.append(s.pid)
    return out


def tree_cpu(roots: list[int]) -> float:
    return sum(s.cpu_ticks for s in ProcTable().descendants(roots)) / TICK


class Sampler(threading.Thread):
    """Peak RSS of a run's workers and of its servers, sampled every `period` s."""

    def __init__(self, roots: list[int], tag: str, period: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roots, self.period = roots, period
        self.needle = ENV_KEY + tag.encode() + b"\0"
        self.kinds: dict[tuple[int, int], bool] = {}  # (pid, start) -> is a server
        self.peak_workers = self.peak_servers = 0
        self.peak_server_count = 0
        self.samples = 0
        self._halt = threading.Event()

    def is_server(self, s: Stat) -> bool:
        key = (s.pid, s.start)
        if key not in self.kinds:
            self.kinds[key] = environ_has(s.pid, self.needle)
        return self.kinds[key]

    def sample(self) -> None:
        workers = servers = count = 0
        for s in ProcTable().descendants(self.roots):
            if s.state == "Z":
                continue
            if self.is_server(s):
                servers += s.rss
                count += 1
            else:
                workers += s.rss
        self.peak_workers = max(self.peak_workers, workers)
        self.peak_servers = max(self.peak_servers, servers)
        self.peak_server_count = max(self.peak_server_count, count)
        self.samples += 1

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            self.sample()
            self._halt.wait(max(0.0, self.period - (time.monotonic() - started)))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
