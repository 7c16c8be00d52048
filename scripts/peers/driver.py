"""The driver of scripts/bench-peers: mcpq against BullMQ, Dramatiq, RQ, Celery and arq.

Per workload (noop, echo, fresh):
 1. every system's workers are started, side by side, and warmed up (deployment.py: each
    system in its own Redis database, its own processes, concurrency 8);
 2. rounds, interleaved: round 1 of every system, then round 2 of every system... (the
    order of the systems rotates from round to round, so none is always first); in a
    round, one system runs N jobs while the others' workers sit idle (their idle polling
    is in Redis's CPU column, and is small);
 3. every system's workers are stopped, all at once (SIGTERM, SIGKILL after 10 s), and
    what each left behind is counted: MCP servers and worker processes still alive 2 s
    later.
The MCP workloads give every job a 30 s timeout, each system its own way: with a fresh
server per job, that is the hang check (jobs that never finish, servers left behind,
how long and how hard the workers were to stop).
Then report.py writes the Markdown section, the chart and the raw JSON. Every process
started is killed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

import deployment
import report
import systems
from deployment import Deployment, log
from systems import Paths, Run

SYSTEMS = ["mcpq", "bullmq", "dramatiq", "rq", "celery", "arq"]
# name -> (N, rounds, warm-up jobs, job timeout s, one round's deadline s)
WORKLOADS = {
    "noop": (20_000, 3, 16, None, 180),
    "echo": (2_000, 3, 16, 30, 120),
    "fresh": (200, 1, 2, 30, 240),
}
# (workload, system) -> N, where the full N would not fit the 15 minutes on 2 cores; the
# table says "N cut to fit the time budget" on those rows. Measured here (2026-11-28):
# RQ, Celery and arq run 130-200 no-ops/s and 80-110 cached echo calls/s, so 20,000
# no-ops would take them 100-150 s a round and 2,000 echo calls 20-25 s; and a fresh
# server-everything costs every system ~0.6 CPU-s of node start-up, so 200 of them take
# a minute per system on an idle 2-core box, and 2-3 minutes while other builds run
# (measured: 100 took 52-153 s at a load average of 15-20), whoever starts them.
N_OVERRIDE: dict[tuple[str, str], int] = {
    **{("noop", s): 2_000 for s in ("rq", "celery", "arq")},
    **{("echo", s): 1_000 for s in ("rq", "celery", "arq")},
    **{("fresh", s): 50 for s in SYSTEMS},
}
# Past this, the remaining rounds are skipped (and say so): the whole run must stay
# under 15 minutes.
BUDGET_S = 14 * 60
RUN_ID = f"bp{os.getpid()}x{int(time.time()) % 100000}"


def run_workload(paths: Paths, w: str, chosen: list[str], db_base: int, smoke: bool,
                 rounds: int, progress, over_budget) -> tuple[list[dict], list[dict]]:
    """Runs one workload on every chosen system: (one result per round and system, one
    stop report per system)."""
    n_full, _, warmup, timeout_s, deadline_s = WORKLOADS[w]
    deps = []
    for s in chosen:
        run = Run(system=s, workload=w, key=f"{RUN_ID}-{s}-{w}", timeout_s=timeout_s, db=db_base + systems.DB_OFFSET[s])
        deps.append(Deployment(paths, run))
    results: list[dict] = []
    stops: list[dict] = []
    try:
        log(f"{w}: starting {', '.join(chosen)} ({progress()})")
        for d in deps:
            d.start()
        for d in deps:
            if d.wait_ready():
                # A smoke run's warm-up only checks the path (its figures mean nothing).
                d.warm_up(2 if smoke else warmup)
        for rnd in range(1, rounds + 1):
            order = deps[rnd - 1 :] + deps[: rnd - 1]
            for d in order:
                n = N_OVERRIDE.get((w, d.run.system), n_full)
                if smoke:
                    n = max(2, n // 100)
                if over_budget():
                    res = {"system": d.run.system, "workload": w, "round": rnd, "n": n, "done": 0, "succeeded": 0,
                           "skipped": True, "notes": [f"round skipped: past the {BUDGET_S // 60}-minute budget"]}
                else:
                    res = d.measure(rnd, n, deadline_s)
                log(f"{w} round {rnd} {d.run.system}: " + ", ".join(
                    f"{k}={v}" for k, v in res.items() if k not in ("system", "workload", "round")) + f" ({progress()})")
                results.append(res)
    finally:
        # All at once: each stop waits for its own workers (up to 10 s, then SIGKILL).
        with ThreadPoolExecutor(max_workers=len(deps)) as pool:
            done = list(pool.map(lambda d: d.stop() if d.workers else None, deps))
        for d, stopped in zip(deps, done):
            if stopped is not None:
                stops.append({"system": d.run.system, "workload": w, **stopped})
                log(f"{w} {d.run.system} stopped: {stops[-1]}")
    return results, stops


def versions(paths: Paths) -> dict[str, str]:
    """Versions of every peer and SDK, as installed."""
    out: dict[str, str] = {}
    freeze = systems.run_quiet([str(paths.py / "pip"), "freeze", "--disable-pip-version-check"])
    freeze_arq = systems.run_quiet([str(paths.py_arq / "pip"), "freeze", "--disable-pip-version-check"])
    for text, names in ((freeze, ["dramatiq", "rq", "celery", "kombu", "redis", "mcp", "matplotlib"]), (freeze_arq, ["arq", "redis", "mcp"])):
        for line in text.splitlines():
            name, _, version = line.partition("==")
            if name.lower() in names:
                key = f"{name.lower()} (arq venv)" if text is freeze_arq and name.lower() != "arq" else name.lower()
                out[f"PyPI {key}"] = version
    for pkg in ["bullmq", "ioredis", "@modelcontextprotocol/sdk"]:
        try:
            out[f"npm {pkg}"] = json.loads((paths.npm / "node_modules" / pkg / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            out[f"npm {pkg}"] = "?"
    ev = paths.everything.resolve().parent
    for _ in range(4):
        if (ev / "package.json").exists():
            break
        ev = ev.parent
    try:
        out["npm @modelcontextprotocol/server-everything"] = json.loads((ev / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        out["npm @modelcontextprotocol/server-everything"] = "?"
    out["mcpq"] = systems.run_quiet([str(paths.mcpq_bin / "mcpq"), "--version"]).strip().removeprefix("mcpq ")
    # The version says little while mcpq moves fast: which build ran, by the binaries' times.
    for b in ("mcpq", "mcpq-worker"):
        built = time.gmtime((paths.mcpq_bin / b).stat().st_mtime)
        out[f"{b} binary"] = f"{paths.mcpq_bin.name}, built {time.strftime('%Y-%m-%d %H:%M UTC', built)}"
    out["node"] = systems.run_quiet(["node", "--version"]).strip()
    out["python"] = systems.run_quiet([str(paths.py / "python"), "--version"]).strip()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--mcpq-bin", type=Path, required=True)
    ap.add_argument("--everything", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="scratch directory: configs, job files, logs")
    ap.add_argument("--json", type=Path, required=True, help="where the raw results go")
    ap.add_argument("--png", type=Path, required=True, help="where the chart goes")
    ap.add_argument("--md", type=Path, required=True, help="the Markdown file whose bench-peers section is (re)written")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--db-base", type=int, default=9)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, help="override every workload's rounds")
    ap.add_argument("--command", default="scripts/bench-peers", help="the command line, for the report")
    a = ap.parse_args()

    def on_signal(signum, _frame):
        # Once: the cleanup that follows must not be cut short by a second signal.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    # Handlers, not SIG_IGN: a shell starts a background job with SIGINT ignored, and an
    # ignored signal would be inherited by every worker and server (a handler is not).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    paths = Paths(cache=a.cache, mcpq_bin=a.mcpq_bin, everything=a.everything, work=work)
    chosen = [s for s in a.systems.split(",") if s]
    workloads = [w for w in a.workloads.split(",") if w]
    for s in chosen:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s}")
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w}")
    for s in chosen:
        r = redis.Redis(host="127.0.0.1", port=6379, db=a.db_base + systems.DB_OFFSET[s])
        foreign = systems.foreign_keys(r, s)
        if foreign:
            log(f"Redis db {a.db_base + systems.DB_OFFSET[s]} (for {s}) holds keys that are not ours, e.g. {foreign}: "
                "refusing to touch it; pick other databases with BENCH_PEERS_DB")
            return 2
    log(f"using Redis databases {a.db_base}..{a.db_base + 5} on 127.0.0.1:6379 (one per system; "
        "only the systems' own key patterns are ever deleted there, never FLUSHDB)")

    def rounds_of(w: str) -> int:
        return 1 if a.smoke else (a.rounds or WORKLOADS[w][1])

    results: list[dict] = []
    stops: list[dict] = []
    started = time.monotonic()
    try:
        for w in workloads:
            res, st = run_workload(paths, w, chosen, a.db_base, a.smoke, rounds_of(w),
                                   lambda: f"{time.monotonic() - started:.0f} s so far",
                                   lambda: time.monotonic() - started > BUDGET_S)
            results += res
            stops += st
    finally:
        deployment.cleanup(RUN_ID)

    meta = report.machine(redis.Redis(host="127.0.0.1", port=6379))
    meta.update(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        command=a.command,
        smoke=a.smoke,
        wall_s=round(time.monotonic() - started, 1),
        versions=versions(paths),
        workloads={w: {"n": max(2, WORKLOADS[w][0] // 100) if a.smoke else WORKLOADS[w][0], "rounds": rounds_of(w),
                       "warmup": WORKLOADS[w][2], "timeout_s": WORKLOADS[w][3]} for w in workloads},
        n_override={f"{w}/{s}": n for (w, s), n in N_OVERRIDE.items()},
    )
    a.json.write_text(json.dumps({"meta": meta, "runs": results, "stops": stops}, indent=1) + "\n")
    section = report.section(meta, results, stops, chosen, workloads)
    report.chart(results, chosen, workloads, a.png)
    report.rewrite(a.md, section)
    print(section)
    log(f"done in {time.monotonic() - started:.0f} s; wrote {a.md}, {a.png}, {a.json}")

    failures = [f"{r['system']} {r['workload']} round {r['round']}: {r.get('succeeded', 0)}/{r['n']} succeeded {r['notes']}"
                for r in results if r.get("succeeded", 0) < r["n"] and not r.get("skipped")]
    for r in results:
        if r.get("skipped"):
            log(f"skipped: {r['system']} {r['workload']} round {r['round']} (time budget)")
    failures += [f"{st['system']} {st['workload']}: {st['left_servers']} servers and {st['left_workers']} worker "
                 "processes left behind after the workers were stopped"
                 for st in stops if st["left_servers"] or st["left_workers"]]
    for f in failures:
        log(f"FAILED: {f}")
    return 1 if a.smoke and failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: stopping everything it started")
        deployment.cleanup(RUN_ID)
        sys.exit(130)
