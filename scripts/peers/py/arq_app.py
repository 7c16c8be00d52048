"""arq peer of scripts/bench-peers (its own venv: arq needs redis-py < 6, Celery's kombu
needs >= 6.4).

Worker: `arq arq_app.WorkerSettings`, one asyncio process with max_jobs = 8, its own
Redis database. The cached session is opened in on_startup and shared by the process's
concurrent jobs. job_timeout is BENCH_TIMEOUT when set (the MCP workloads: 30 s), else
arq's default (300 s).
Enqueue (enqueue.py): an `enqueue_job` loop, arq's only way (one transaction each).
"""

import contextlib

from arq.connections import RedisSettings

import common


async def job(ctx, run: str, enq_ms: float, msg: str) -> None:
    if common.WORKLOAD == "echo":
        common.check_echo(await ctx["mcp"].call_tool("echo", {"message": msg}), msg)
    elif common.WORKLOAD == "fresh":
        await common.fresh_call(msg)
    # The one extra round trip every peer pays (common.record), on arq's own async client.
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.incr(f"bench-peers:{run}:done")
        pipe.rpush(f"bench-peers:{run}:lat", f"{common.now_ms() - enq_ms:.3f}")
        await pipe.execute()


async def startup(ctx) -> None:
    stack = contextlib.AsyncExitStack()
    ctx["stack"] = stack
    if common.WORKLOAD == "echo":
        ctx["mcp"] = await stack.enter_async_context(common.client(common.server_params()))
    common.mark_ready()


async def shutdown(ctx) -> None:
    await ctx["stack"].aclose()


class WorkerSettings:
    functions = [job]
    queue_name = common.QUEUE
    redis_settings = RedisSettings.from_dsn(common.REDIS_URL)
    max_jobs = 8
    on_startup = startup
    on_shutdown = shutdown
    if common.TIMEOUT:
        job_timeout = common.TIMEOUT


async def enqueue_async(pool, run: str, stamps_and_msgs) -> None:
    for enq_ms, msg in stamps_and_msgs:
        await pool.enqueue_job("job", run, enq_ms, msg)
