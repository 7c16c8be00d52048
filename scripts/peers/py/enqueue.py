"""Enqueuer of the Python peers for scripts/bench-peers: `python enqueue.py PEER`
(PEER: dramatiq | rq | celery | arq; the Redis database etc. from BENCH_* as in common.py).

It imports the peer and connects first, prints "ready", then reads commands on stdin,
one per line, "COUNTER N": it enqueues N jobs the peer's natural way (see each *_app.py),
each stamped with the time it was enqueued and told to count itself under COUNTER, and
prints "enqueued N". The harness starts its clock when it writes the line, so neither
process start nor import time (Celery's is half a second) counts against anyone. Exits
at the end of its input.
"""

import asyncio
import sys

import common


def jobs(n: int, msg: str):
    for _ in range(n):
        yield common.now_ms(), msg


def commands():
    for line in sys.stdin:
        counter, n = line.split()
        yield counter, int(n)


async def run_arq() -> None:
    from arq import create_pool

    import arq_app

    pool = await create_pool(arq_app.WorkerSettings.redis_settings, default_queue_name=common.QUEUE)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        counter, n = line.split()
        await arq_app.enqueue_async(pool, counter, jobs(int(n), "x"))
        print(f"enqueued {n}", flush=True)
    await pool.aclose()


def main() -> None:
    peer = sys.argv[1]
    if peer == "arq":
        asyncio.run(run_arq())
        return
    app = __import__(f"{peer}_app")
    app.connect()  # before "ready": the first send would otherwise pay for it
    print("ready", flush=True)
    for counter, n in commands():
        app.enqueue(counter, jobs(n, "x"))
        print(f"enqueued {n}", flush=True)


if __name__ == "__main__":
    main()
