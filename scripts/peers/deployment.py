"""One system's workers for one workload, from start to stop (scripts/bench-peers).

Lifecycle (driver.py runs every system's deployment of a workload side by side):
 1. `start`: delete the system's own keys from its Redis database, start its workers
    (each in its own session) and, for a peer, its enqueuer (it connects, says "ready");
 2. `wait_ready`: peers INCR bench-peers:KEY:ready per worker process once its cached MCP
    session, if any, is open; mcpq logs "worker started";
 3. `warm_up`: W jobs through the whole path, not measured: every system is measured
    warm (mcpq's pool opens its sessions on first use, the peers at start);
 4. `measure(round)`, once per round: sample the workers' process trees (procs.Sampler),
    read their CPU and Redis's, start the clock, enqueue N jobs, poll one Redis counter
    every 20 ms until N jobs are done (or no progress for STALL_S, or the deadline), stop
    the clock, read CPU again, then latencies;
 5. `stop`: SIGTERM to the workers, up to STOP_GRACE_S, then SIGKILL; then count the MCP
    servers (by the tag in their environment) and worker processes still alive
    STOP_SETTLE_S later ("left behind"), kill them, delete the keys.
Every wait has a deadline; every process started is in `STARTED`, killed by `cleanup`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

import procs
import systems
from systems import Paths, Run

POLL_S = 0.02
STALL_S = 45.0  # > the 30 s job timeout of the MCP workloads: a timed-out job is an end too
READY_S = 90.0
STOP_GRACE_S = 10.0
STOP_SETTLE_S = 2.0

STARTED: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"bench-peers: {msg}", file=sys.stderr, flush=True)


def start(cmd: list[str], cwd: Path | None, env: dict[str, str], logfile: Path, talk: bool = False) -> subprocess.Popen:
    """Starts a process in its own session (so its group can be killed), stderr (and
    stdout unless `talk`: then stdin and stdout are pipes to us) to `logfile`."""
    with open(logfile, "ab") as out:
        p = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
            stdout=subprocess.PIPE if talk else out,
            stderr=out,
            start_new_session=True,
        )
    STARTED.append(p)
    return p


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def cleanup(tag_prefix: str) -> None:
    """Kills every process started here and every MCP server tagged `tag_prefix`*."""
    for p in STARTED:
        if p.poll() is None:
            kill_group(p)
    kill_pids(procs.tagged(tag_prefix))


def wait_until(deadline_s: float, cond) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def mcpq_env() -> dict[str, str]:
    """The environment minus what would point mcpq elsewhere than its config."""
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MCPQ_CONFIG", "MCPQ_NAMESPACE")}


def mcpq_job(workload: str, timeout_s: int | None) -> str:
    """One line of mcpq's batch file: a no-op job, or one echo call on server-everything."""
    if workload == "noop":
        return json.dumps({"kind": "noop"})
    step = {"server": "everything", "tool": "echo", "arguments": {"message": "x"}}
    job: dict = {"kind": "agent", "payload": {"steps": [step]}}
    if timeout_s:
        job["options"] = {"timeout": f"{timeout_s}s"}
    return json.dumps(job)


class Deployment:
    def __init__(self, paths: Paths, run: Run) -> None:
        self.paths, self.run = paths, run
        self.r = redis.Redis(host="127.0.0.1", port=6379, db=run.db)
        self.info = redis.Redis(host="127.0.0.1", port=6379)
        self.workers: list[subprocess.Popen] = []
        self.enqueuer: subprocess.Popen | None = None
        self.cfg: Path | None = None
        self.logs: list[Path] = []
        self.error: str | None = None
        self.stopped: dict | None = None

    @property
    def name(self) -> str:
        return f"{self.run.system}/{self.run.workload}"

    def fail(self, why: str) -> None:
        log(f"{self.name}: {why}")
        self.error = self.error or why

    # -- 1, 2, 3 ----------------------------------------------------------------------

    def start(self) -> None:
        run = self.run
        systems.clean(self.r, run.system)
        cmds, cwd, env = systems.worker_commands(self.paths, run)
        self.cfg = self.paths.work / f"{run.key}.toml" if run.system == "mcpq" else None
        self.logs = [self.paths.work / f"{run.key}.worker{i}.log" for i in range(len(cmds))]
        self.workers = [start(c, cwd, env, lf) for c, lf in zip(cmds, self.logs)]
        if run.system != "mcpq":
            cmd, cwd, env = systems.enqueuer(self.paths, run)
            self.enqueuer = start(cmd, cwd, env, self.paths.work / f"{run.key}.enqueuer.log", talk=True)

    def wait_ready(self) -> bool:
        run = self.run
        if run.system == "mcpq":
            ok = wait_until(READY_S, lambda: "worker started" in self.logs[0].read_text(errors="replace"))
        else:
            want = systems.EXPECTED_READY[run.system]
            ok = wait_until(READY_S, lambda: int(self.r.get(f"bench-peers:{run.key}:ready") or 0) >= want)
            if ok and self.enqueuer is not None:
                ready, _, _ = select.select([self.enqueuer.stdout], [], [], READY_S)
                ok = bool(ready) and self.enqueuer.stdout.readline().strip() == b"ready"
        if not ok or any(w.poll() is not None for w in self.workers):
            self.fail(f"workers or enqueuer did not start within {READY_S:.0f} s: see {self.logs[0]}")
            return False
        return True

    def warm_up(self, n: int) -> None:
        done = self.enqueue_and_wait(f"{self.run.key}-warm", n, READY_S)[2]
        if done < n:
            self.fail(f"warm-up did not finish ({done}/{n})")

    # -- 4 -------------------------------------------------------------------------------

    def enqueue_and_wait(self, counter: str, n: int, deadline_s: float):
        """Enqueues n jobs and polls until they are done. Returns (t0, t_end, done,
        succeeded, batch, note): monotonic times, jobs ended and succeeded, mcpq's batch."""
        batch = None
        if self.run.system == "mcpq":
            jobs = self.paths.work / f"{counter}.jsonl"
            jobs.write_text((mcpq_job(self.run.workload, self.run.timeout_s) + "\n") * n)
            log_path = self.paths.work / f"{counter}.submit.log"
            t0 = time.monotonic()
            p = start(systems.mcpq_submit(self.paths, self.cfg, jobs), None, mcpq_env(), log_path, talk=True)
            try:
                out, _ = p.communicate(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                kill_group(p)
                raise RuntimeError("mcpq batch submit did not finish in time")
            lines = out.decode().split()
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"mcpq batch submit failed ({p.returncode}): see {log_path}")
            batch = lines[-1]

            def read():
                ok, ended = systems.mcpq_done(self.r, batch)
                return ended, ok
        else:
            t0 = time.monotonic()
            self.enqueuer.stdin.write(f"{counter} {n}\n".encode())
            self.enqueuer.stdin.flush()

            def read():
                done = systems.peer_done(self.r, counter)
                return done, done

        end = t0 + deadline_s
        last, last_change, note = -1, time.monotonic(), None
        while True:
            now = time.monotonic()
            done, ok = read()
            if done >= n:
                break
            if done != last:
                last, last_change = done, now
            if now - last_change > STALL_S or now > end:
                note = f"stopped waiting at {done}/{n} ({'no progress for 45 s' if now <= end else 'deadline'})"
                break
            time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))
        t_end = now
        if self.enqueuer is not None:
            # Its "enqueued N" line (it has long been written when the jobs are done).
            ready, _, _ = select.select([self.enqueuer.stdout], [], [], 30)
            if ready:
                self.enqueuer.stdout.readline()
        return t0, t_end, done, ok, batch, note

    def redis_cpu(self) -> float:
        cpu = self.info.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def measure(self, rnd: int, n: int, deadline_s: float) -> dict:
        run = self.run
        result: dict = {"system": run.system, "workload": run.workload, "round": rnd, "n": n, "notes": [],
                        "load1": round(os.getloadavg()[0], 1)}
        if self.error:
            result.update(done=0, succeeded=0, notes=[f"not run: {self.error}"])
            return result
        roots = [w.pid for w in self.workers]
        sampler = procs.Sampler(roots, run.tag)
        sampler.start()
        try:
            cpu0, rcpu0 = procs.tree_cpu(roots), self.redis_cpu()
            t0, t_end, done, succeeded, batch, note = self.enqueue_and_wait(f"{run.key}-r{rnd}", n, deadline_s)
            cpu1, rcpu1 = procs.tree_cpu(roots), self.redis_cpu()
        except Exception as e:  # noqa: BLE001 - a failed round is reported, the next one runs
            sampler.stop()
            self.fail(str(e))
            result.update(done=0, succeeded=0, notes=[f"error: {e}"])
            return result
        sampler.stop()
        elapsed = t_end - t0
        result.update(
            done=done,
            succeeded=succeeded,
            elapsed_s=round(elapsed, 3),
            jobs_per_s=round(succeeded / elapsed, 1) if elapsed > 0 and succeeded else None,
            cpu_s=round(cpu1 - cpu0, 2),
            cpu_s_per_1k=round((cpu1 - cpu0) * 1000 / max(succeeded, 1), 3),
            redis_cpu_s=round(rcpu1 - rcpu0, 2),
            peak_rss_workers_mb=round(sampler.peak_workers / 2**20, 1),
            peak_rss_servers_mb=round(sampler.peak_servers / 2**20, 1),
            peak_servers=sampler.peak_server_count,
        )
        if note:
            result["notes"].append(note)
        lat = systems.mcpq_latencies(self.r, batch) if batch else systems.peer_latencies(self.r, f"{run.key}-r{rnd}")
        if len(lat) > 1:
            q = statistics.quantiles(lat, n=100, method="inclusive")
            result.update(p50_ms=round(q[49], 1), p99_ms=round(q[98], 1))
        return result

    # -- 5 -------------------------------------------------------------------------------

    def stop(self) -> dict:
        """SIGTERM, up to STOP_GRACE_S, SIGKILL; then what is left behind."""
        if self.enqueuer is not None and self.enqueuer.poll() is None:
            self.enqueuer.stdin.close()  # it exits at the end of its input
            try:
                self.enqueuer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(self.enqueuer)
        members = {s.pid for s in procs.ProcTable().descendants([w.pid for w in self.workers])}
        t = time.monotonic()
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        wait_until(STOP_GRACE_S, lambda: all(w.poll() is not None for w in self.workers))
        stop_s = time.monotonic() - t
        killed = False
        for w in self.workers:
            if w.poll() is None:
                killed = True
                w.kill()
                w.wait(timeout=5)
        # Servers get STOP_SETTLE_S to notice that their client is gone (stdin closed).
        wait_until(STOP_SETTLE_S, lambda: not procs.tagged(self.run.tag + "\0"))
        left_servers = procs.tagged(self.run.tag + "\0")
        table = procs.ProcTable()
        left_workers = [p for p in members if p in table.stats and table.stats[p].state != "Z" and p not in left_servers]
        kill_pids(left_servers + left_workers)
        for w in self.workers:
            kill_group(w)
        systems.clean(self.r, self.run.system)
        self.stopped = {
            "stop_s": round(stop_s, 2),
            "sigkill": killed,
            "left_servers": len(left_servers),
            "left_workers": len(left_workers),
        }
        return self.stopped
