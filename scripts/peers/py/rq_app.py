"""RQ peer of scripts/bench-peers: the job function, and the worker launcher
(`python rq_app.py [simple|fork]`, one process per RQ worker: RQ runs one job at a time
per worker, so concurrency 8 is 8 of these processes).

- simple: rq.SimpleWorker, which runs jobs in the worker process itself; used for the
  no-op and cached-session workloads (RQ's default Worker forks a "work horse" per job,
  so a session opened per worker process could not be reused by the jobs, and a fork
  per no-op job would measure fork()).
- fork: rq.Worker, RQ's default (a forked work horse per job); used for the
  fresh-server-per-job workload, where a process per job costs little next to starting
  a node server.
Enqueue (enqueue.py): Queue.enqueue_many of Queue.prepare_data, 500 jobs per call (one
Redis pipeline each), with job_timeout = BENCH_TIMEOUT when set (the MCP workloads:
30 s), else RQ's default (180 s).
"""

import sys

import common


def job(run: str, enq_ms: float, msg: str) -> None:
    common.run_job(run, enq_ms, msg)


_queue = None


def connect() -> None:
    global _queue
    import redis
    from rq import Queue

    conn = redis.Redis.from_url(common.REDIS_URL)
    conn.ping()
    _queue = Queue(common.QUEUE, connection=conn)


def enqueue(run: str, stamps_and_msgs) -> None:
    from rq import Queue

    queue = _queue
    chunk = []
    options = {"timeout": common.TIMEOUT} if common.TIMEOUT else {}
    for enq_ms, msg in stamps_and_msgs:
        chunk.append(Queue.prepare_data(job, (run, enq_ms, msg), **options))
        if len(chunk) == 500:
            queue.enqueue_many(chunk)
            chunk = []
    if chunk:
        queue.enqueue_many(chunk)


def main() -> None:
    import redis
    from rq import Queue, SimpleWorker, Worker

    kind = sys.argv[1] if len(sys.argv) > 1 else "simple"
    conn = redis.Redis.from_url(common.REDIS_URL)
    common.start_worker_process()
    cls = SimpleWorker if kind == "simple" else Worker
    cls([Queue(common.QUEUE, connection=conn)], connection=conn).work(with_scheduler=False)


if __name__ == "__main__":
    main()
