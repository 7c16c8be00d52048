"""How scripts/bench-peers starts, feeds and reads each system (mcpq and its five peers).

Every system gets its own Redis database on 127.0.0.1:6379 (`DB_OFFSET` from a base,
9 by default: mcpq 9, BullMQ 10, Dramatiq 11, RQ 12, Celery 13, arq 14) and the keys it
may leave there (`patterns`): the harness deletes only keys matching them, never FLUSHDB,
and refuses to run when a database holds anything else.

A system is:
- `worker_commands(workload)`: the processes to start, each in its own session;
  concurrency 8 everywhere (mcpq: worker.concurrency = 8; BullMQ: one Worker with
  concurrency 8; Dramatiq: 1 process x 8 threads; RQ: 8 worker processes; Celery:
  prefork, concurrency 8; arq: max_jobs 8);
- `expected_ready`: how many worker processes announce themselves (peers INCR
  bench-peers:RUN:ready once their cached session, if any, is open; mcpq logs
  "worker started");
- `enqueue(...)`: an enqueuer process that connects, says "ready", and enqueues N jobs
  when told "go" (peers: scripts/peers/py/enqueue.py, scripts/peers/bullmq/enqueue.mjs;
  mcpq: `mcpq batch submit FILE`, 500 jobs per script call inside, started at "go");
- `done(...)`: one Redis read: the peer's completion counter (INCRed by each job at its
  end), or for mcpq the batch's succeeded + dead counts.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
DB_OFFSET = {"mcpq": 0, "bullmq": 1, "dramatiq": 2, "rq": 3, "celery": 4, "arq": 5}
# Every key the harness may delete, per system (the bench-peers:* keys are the harness's
# own counters). Celery's broker and arq keep their queue under the queue's name ("bench").
PATTERNS = {
    "mcpq": ["{bench-peers}*", "{bench-peers~*", "bench-peers:*"],
    "bullmq": ["bull:*", "bench-peers:*"],
    "dramatiq": ["dramatiq:*", "bench-peers:*"],
    "rq": ["rq:*", "bench-peers:*"],
    "celery": ["bench*", "_kombu.*", "unacked*", "celery*"],
    "arq": ["arq:*", "bench*"],  # its queue is the key "bench" (+ "bench:health-check")
}
MCPQ_NAMESPACE = "bench-peers"


@dataclass
class Paths:
    """Where everything is (set by scripts/bench-peers)."""

    cache: Path  # $HOME/.cache/mcpq-peers: venv, venv-arq, npm
    mcpq_bin: Path  # mcpq, mcpq-worker
    everything: Path  # the server-everything script (scripts/test-deps installs it)
    work: Path  # this run's scratch directory (configs, job files, logs)

    @property
    def py(self) -> Path:
        return self.cache / "venv" / "bin"

    @property
    def py_arq(self) -> Path:
        return self.cache / "venv-arq" / "bin"

    @property
    def npm(self) -> Path:
        return self.cache / "npm"


@dataclass
class Run:
    """One system's deployment for one workload (its rounds share its workers)."""

    system: str
    workload: str  # noop | echo | fresh
    key: str  # unique: names its counters (KEY-rN per round), its files, its servers' tag
    timeout_s: int | None  # the job timeout, set with the system's own setting
    db: int

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:6379/{self.db}"

    @property
    def tag(self) -> str:
        return self.key


def peer_env(paths: Paths, run: Run) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BENCH_REDIS_URL=run.redis_url,
        BENCH_RUN=run.key,
        BENCH_WORKLOAD=run.workload,
        BENCH_SERVER_CMD="node",
        BENCH_SERVER_ARGS=json.dumps([str(paths.everything)]),
        BENCH_SERVER_TAG=run.tag,
        BENCH_ROLE="worker",
        PYTHONPATH=str(HERE / "py"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    if run.timeout_s:
        env["BENCH_TIMEOUT"] = str(run.timeout_s)
    else:
        env.pop("BENCH_TIMEOUT", None)
    return env


def mcpq_config(paths: Paths, run: Run) -> Path:
    """mcpq's config for a run: concurrency 8, defaults otherwise (pool included)."""
    if run.workload == "noop":
        server = ""  # {"kind": "noop"} jobs need no server
    else:
        server = (
            f'[servers.everything]\ncommand = "node"\nargs = ["{paths.everything}"]\n'
            f'env = {{ BENCH_PEERS_SERVER_TAG = "{run.tag}" }}\n'
        )
        if run.workload == "fresh":
            server += "pool = false\n"
    path = paths.work / f"{run.key}.toml"
    path.write_text(
        f'namespace = "{MCPQ_NAMESPACE}"\nredis_url = "{run.redis_url}"\n'
        f"[worker]\nconcurrency = 8\n{server}"
    )
    return path


def worker_commands(paths: Paths, run: Run) -> tuple[list[list[str]], Path | None, dict[str, str]]:
    """The worker processes to start (argv each), their working directory, their env."""
    env = peer_env(paths, run)
    py_dir = HERE / "py"
    s = run.system
    if s == "mcpq":
        env.pop("REDIS_URL", None)
        env.pop("MCPQ_CONFIG", None)
        env.pop("MCPQ_NAMESPACE", None)
        cfg = mcpq_config(paths, run)
        return [[str(paths.mcpq_bin / "mcpq-worker"), "--config", str(cfg)]], None, env
    if s == "bullmq":
        return [["node", "worker.mjs"]], paths.npm, env
    if s == "dramatiq":
        cmd = [str(paths.py / "dramatiq"), "dramatiq_app", "--processes", "1", "--threads", "8", "--queues", "bench"]
        return [cmd], py_dir, env
    if s == "rq":
        # SimpleWorker for noop/echo, RQ's default forking Worker for fresh (rq_app.py).
        kind = "simple" if run.workload in ("noop", "echo") else "fork"
        return [[str(paths.py / "python"), "rq_app.py", kind] for _ in range(8)], py_dir, env
    if s == "celery":
        cmd = [str(paths.py / "celery"), "-A", "celery_app", "worker", "--concurrency", "8", "-Q", "bench"]
        return [cmd], py_dir, env
    if s == "arq":
        return [[str(paths.py_arq / "arq"), "arq_app.WorkerSettings"]], py_dir, env
    raise ValueError(s)


EXPECTED_READY = {"mcpq": 1, "bullmq": 1, "dramatiq": 1, "rq": 8, "celery": 8, "arq": 1}


def enqueuer(paths: Paths, run: Run) -> tuple[list[str], Path, dict[str, str]]:
    """A peer's enqueuer (argv, cwd, env): it prints "ready", then enqueues N jobs
    counted under COUNTER for each "COUNTER N" line it reads."""
    env = peer_env(paths, run)
    env["BENCH_ROLE"] = "enqueuer"
    if run.system == "bullmq":
        return ["node", "enqueue.mjs"], paths.npm, env
    python = paths.py_arq if run.system == "arq" else paths.py
    return [str(python / "python"), "enqueue.py", run.system], HERE / "py", env


def mcpq_submit(paths: Paths, cfg: Path, jobs_file: Path) -> list[str]:
    return [str(paths.mcpq_bin / "mcpq"), "--config", str(cfg), "batch", "submit", str(jobs_file)]


def peer_done(r: redis.Redis, counter: str) -> int:
    return int(r.get(f"bench-peers:{counter}:done") or 0)


def mcpq_done(r: redis.Redis, batch: str) -> tuple[int, int]:
    """(succeeded, succeeded + dead) of an mcpq batch: one HMGET."""
    ok, dead = r.hmget(f"{{{MCPQ_NAMESPACE}}}:batch:{batch}", "succeeded", "dead")
    return int(ok or 0), int(ok or 0) + int(dead or 0)


def peer_latencies(r: redis.Redis, counter: str) -> list[float]:
    return [float(x) for x in r.lrange(f"bench-peers:{counter}:lat", 0, -1)]


def mcpq_latencies(r: redis.Redis, batch: str) -> list[float]:
    """finished_at - submitted_at (ms) of every job of the batch that finished."""
    prefix = f"{{{MCPQ_NAMESPACE}}}"
    ids = r.lrange(f"{prefix}:batch:{batch}:jobs", 0, -1)
    out: list[float] = []
    for i in range(0, len(ids), 1000):
        pipe = r.pipeline(transaction=False)
        for job in ids[i : i + 1000]:
            pipe.hmget(f"{prefix}:job:{job.decode()}", "submitted_at", "finished_at")
        for submitted, finished in pipe.execute():
            if submitted and finished:
                out.append(float(int(finished) - int(submitted)))
    return out


def clean(r: redis.Redis, system: str) -> int:
    """Deletes this system's keys (its patterns only) from its database."""
    n = 0
    for pattern in PATTERNS[system]:
        batch = []
        for key in r.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 1000:
                n += r.unlink(*batch)
                batch = []
        if batch:
            n += r.unlink(*batch)
    return n


def foreign_keys(r: redis.Redis, system: str, limit: int = 5) -> list[str]:
    """Keys in the system's database that none of its patterns covers (someone else's)."""
    import fnmatch

    out = []
    for key in r.scan_iter(count=1000):
        k = key.decode(errors="replace")
        # fnmatch treats [ ] specially; the patterns only use * and literal braces.
        if not any(fnmatch.fnmatchcase(k, p.replace("[", "[[]")) for p in PATTERNS[system]):
            out.append(k)
            if len(out) >= limit:
                break
    return out


def run_quiet(cmd: list[str], timeout: float = 30) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False).stdout
