"""Celery peer of scripts/bench-peers: one task whose body is common.run_job.

Worker: `celery -A celery_app worker --concurrency 8 -Q bench` with its default pool
(prefork: 8 child processes), the Redis broker in its own database, no result backend
(ignore_result), other settings at Celery's defaults (prefetch multiplier 4, early
acks). Each child opens its cached session in worker_process_init. The task's
time_limit is BENCH_TIMEOUT when set (the MCP workloads: 30 s; the child running a job
past it is killed), else Celery's default (none).
Enqueue (enqueue.py): an apply_async loop (a group would send them one by one too).
"""

from celery import Celery
from celery.signals import worker_process_init

import common

app = Celery("bench_peers", broker=common.REDIS_URL)
app.conf.task_default_queue = common.QUEUE
app.conf.broker_connection_retry_on_startup = True

_options = {"time_limit": common.TIMEOUT} if common.TIMEOUT else {}


@app.task(name="bench.job", ignore_result=True, **_options)
def job(run: str, enq_ms: float, msg: str) -> None:
    common.run_job(run, enq_ms, msg)


@worker_process_init.connect
def _open_session(**_kwargs) -> None:
    common.start_worker_process()


def connect() -> None:
    # Opens a connection of the producer pool the sends use.
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=3)


def enqueue(run: str, stamps_and_msgs) -> None:
    for enq_ms, msg in stamps_and_msgs:
        job.apply_async((run, enq_ms, msg), queue=common.QUEUE)
