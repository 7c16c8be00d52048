"""Dramatiq peer of scripts/bench-peers: one actor whose body is common.run_job.

Worker: `dramatiq dramatiq_app --processes 1 --threads 8 --queues bench` (1 process x 8
threads), Redis broker in its own database (namespace "dramatiq"), default middleware
(retries, age and time limits...). The actor's time_limit is BENCH_TIMEOUT s when set
(the MCP workloads: 30 s), else Dramatiq's default (10 min).
Enqueue (enqueue.py): a `job.send(...)` loop, Dramatiq's natural way (it has no bulk
enqueue; its pipelines chain jobs, they do not batch sends).
"""

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import common

broker = RedisBroker(url=common.REDIS_URL)
dramatiq.set_broker(broker)

_options = {"time_limit": common.TIMEOUT * 1000} if common.TIMEOUT else {}


@dramatiq.actor(queue_name=common.QUEUE, **_options)
def job(run: str, enq_ms: float, msg: str) -> None:
    common.run_job(run, enq_ms, msg)


def connect() -> None:
    broker.client.ping()


def enqueue(run: str, stamps_and_msgs) -> None:
    for enq_ms, msg in stamps_and_msgs:
        job.send(run, enq_ms, msg)


# Dramatiq imports this module in each worker process: open the session there.
if common.IS_WORKER:
    common.start_worker_process()
