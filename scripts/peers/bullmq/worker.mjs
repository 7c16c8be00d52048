// BullMQ peer of scripts/bench-peers: one Worker with concurrency 8 in one Node process,
// BullMQ's defaults otherwise (jobs kept after completion, stalled-job checks...), Redis
// in its own database (prefix "bull").
//
// Workloads (BENCH_WORKLOAD): noop; echo: one MCP session opened at start and shared by
// the 8 concurrent jobs (the SDK multiplexes requests on it); fresh: a new client and
// server per job, closed at its end. BullMQ has no job timeout (its docs: "BullMQ does
// not support timeouts"), so with BENCH_TIMEOUT (the MCP workloads: 30 s) the job races
// a timer, as its docs suggest; a fresh client is closed either way.
//
// Every job ends with one extra Redis round trip: INCR of the completion counter and
// RPUSH of its latency (enqueue to finish, ms), pipelined.
import { Worker } from "bullmq";
import { QUEUE, connect, echo, env, nowMs, redis } from "./common.mjs";

const counters = redis();
let session = null;
if (env.workload === "echo") session = await connect();

async function fresh(msg) {
  const client = await connect();
  try {
    await echo(client, msg);
  } finally {
    await client.close();
  }
}

function withTimeout(promise, seconds) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`job timed out after ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

async function processor(job) {
  const { run, enq, msg } = job.data;
  let work = null;
  if (env.workload === "echo") work = echo(session, msg);
  else if (env.workload === "fresh") work = fresh(msg);
  if (work) await (env.timeoutS ? withTimeout(work, env.timeoutS) : work);
  await counters
    .pipeline()
    .incr(`bench-peers:${run}:done`)
    .rpush(`bench-peers:${run}:lat`, (nowMs() - enq).toFixed(3))
    .exec();
}

const worker = new Worker(QUEUE, processor, { connection: redis(), concurrency: 8 });
worker.on("error", (err) => console.error("worker error:", err.message));
await worker.waitUntilReady();
await counters.incr(`bench-peers:${env.run}:ready`);

async function stop() {
  await worker.close();
  if (session) await session.close();
  counters.disconnect();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
