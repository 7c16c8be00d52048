"""What every Python peer's job does, shared by dramatiq_app, rq_app, celery_app and arq_app.

scripts/bench-peers (scripts/peers/driver.py) starts a peer's workers with these
environment variables, and the job functions here read them:

  BENCH_REDIS_URL    the peer's own Redis database (redis://127.0.0.1:6379/N)
  BENCH_RUN          the run's key: completions go to bench-peers:RUN:done, latencies
                     to bench-peers:RUN:lat (both in that database)
  BENCH_WORKLOAD     noop | echo (one cached MCP session per worker process, opened at
                     start) | fresh (a new MCP client and server per job)
  BENCH_SERVER_CMD   the MCP server's command (node)
  BENCH_SERVER_ARGS  its arguments, a JSON list (the server-everything script)
  BENCH_SERVER_TAG   put into the server's environment as BENCH_PEERS_SERVER_TAG, so the
                     harness can find (and count) the servers a run left behind
  BENCH_TIMEOUT      the job timeout in seconds, set with the peer's own setting (the MCP
                     workloads: 30 s, the hang check; unset: the peer's default)
  BENCH_ROLE         "worker" in worker processes (an enqueuer imports the same modules)

What a job costs beyond its work: ONE extra Redis round trip at its end (INCR of the
completion counter and RPUSH of its latency, pipelined), which is how the harness sees
completions the same way for every peer (mcpq's are read from its batch's counts).

The MCP side uses the official Python SDK (PyPI `mcp`) the plain way: `Client` over
`StdioServerParameters`, the initialize handshake (mode="legacy", what mcpq's rmcp
client does too), `call_tool("echo", {"message": ...})`, and the SDK's defaults
otherwise (the server's stderr goes to the worker's stderr, as in the SDK's examples).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import redis

# The MCP SDK is imported at module import, as an app would, except for the no-op
# workload (its import, pydantic and all, would be most of a no-op worker's start-up).
# The time of import matters: stdio_client's `errlog` defaults to the sys.stderr of that
# moment, and a Celery child has replaced sys.stderr by a LoggingProxy, which has no
# fileno(), by the time it runs jobs: imported then, every spawn fails.
if os.environ.get("BENCH_WORKLOAD", "noop") != "noop":
    import mcp.client  # noqa: F401
    import mcp.client.stdio  # noqa: F401

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
RUN = os.environ.get("BENCH_RUN", "none")
WORKLOAD = os.environ.get("BENCH_WORKLOAD", "noop")
TIMEOUT = int(os.environ["BENCH_TIMEOUT"]) if os.environ.get("BENCH_TIMEOUT") else None
IS_WORKER = os.environ.get("BENCH_ROLE") == "worker"
QUEUE = "bench"
# A call on a cached session that takes longer than this is a failure, not a wait for
# ever (the jobs' own timeouts are the peers' business: see BENCH_TIMEOUT).
CALL_DEADLINE_S = 60.0


def now_ms() -> float:
    """Wall-clock milliseconds: enqueuers stamp jobs with it, jobs subtract it."""
    return time.time() * 1000.0


def server_params():
    """The MCP server every job talks to, tagged so the harness can count leftovers."""
    from mcp.client.stdio import StdioServerParameters

    return StdioServerParameters(
        command=os.environ.get("BENCH_SERVER_CMD", "node"),
        args=json.loads(os.environ.get("BENCH_SERVER_ARGS", "[]")),
        env={"BENCH_PEERS_SERVER_TAG": os.environ.get("BENCH_SERVER_TAG", "untagged")},
    )


# One Redis client per process: Celery's prefork children are forked from a parent that
# may have made one, and a connection must not be shared across a fork.
_redis: tuple[int, redis.Redis] | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis.Redis.from_url(REDIS_URL))
    return _redis[1]


def record(run: str, enq_ms: float) -> None:
    """The job's end: count it and push its enqueue-to-finish latency (ms), one round trip."""
    pipe = _client().pipeline(transaction=False)
    pipe.incr(f"bench-peers:{run}:done")
    pipe.rpush(f"bench-peers:{run}:lat", f"{now_ms() - enq_ms:.3f}")
    pipe.execute()


def mark_ready() -> None:
    """A worker process is ready to take jobs (its cached session is open, if any)."""
    _client().incr(f"bench-peers:{RUN}:ready")


def check_echo(result: Any, msg: str) -> None:
    text = result.content[0].text if result.content else ""
    if result.is_error or msg not in text:
        raise RuntimeError(f"echo answered {text!r}")


def client(params):
    """The SDK's high-level client, initialize handshake (what mcpq's rmcp client does)."""
    from mcp.client import Client

    return Client(params, mode="legacy")


async def fresh_call(msg: str) -> None:
    """A new client, server and session for one call, closed at the end (workload 3)."""
    async with client(server_params()) as c:
        check_echo(await c.call_tool("echo", {"message": msg}), msg)


class CachedSession:
    """One MCP session per worker process, shared by the process's threads (workload 2).

    The session lives in a task on a private event loop in a daemon thread (an SDK
    session belongs to the loop that opened it); threads submit calls to that loop.
    Nothing closes it when the worker exits: the server sees its stdin close and exits,
    which is what the harness's left-behind count checks.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="mcp-session", daemon=True).start()
        if not self._ready.wait(timeout=CALL_DEADLINE_S):
            raise RuntimeError("the MCP session did not open within 60 s")
        if self._error is not None:
            raise RuntimeError("the MCP session did not open") from self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._hold())

    async def _hold(self) -> None:
        try:
            async with client(server_params()) as c:
                self.client = c
                self._ready.set()
                await asyncio.Event().wait()  # until the process ends
        except BaseException as e:  # noqa: BLE001 - reported to the opener
            self._error = e
            self._ready.set()

    def call(self, msg: str) -> None:
        assert self.client is not None
        fut = asyncio.run_coroutine_threadsafe(self.client.call_tool("echo", {"message": msg}), self.loop)
        check_echo(fut.result(timeout=CALL_DEADLINE_S), msg)


_session: CachedSession | None = None
_session_lock = threading.Lock()


def start_worker_process() -> None:
    """Called once per worker process at its start: opens the cached session (workload
    echo), then says the process is ready."""
    global _session
    if WORKLOAD == "echo":
        with _session_lock:
            if _session is None:
                _session = CachedSession()
    mark_ready()


def run_job(run: str, enq_ms: float, msg: str) -> None:
    """The body of every synchronous peer's job (Dramatiq, RQ, Celery)."""
    if WORKLOAD == "echo":
        if _session is None:
            raise RuntimeError("no cached session: start_worker_process() did not run here")
        _session.call(msg)
    elif WORKLOAD == "fresh":
        asyncio.run(fresh_call(msg))
    record(run, enq_ms)
