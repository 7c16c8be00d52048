// Enqueuer of the BullMQ peer (scripts/bench-peers): `node enqueue.mjs`.
// Connects, prints "ready", then reads commands on stdin, one per line, "COUNTER N": adds
// N jobs with Queue.addBulk, 500 per call (BullMQ's bulk add: one MULTI each), every job
// stamped with its chunk's enqueue time and told to count itself under COUNTER, and prints
// "enqueued N". The harness starts its clock when it writes the line. Exits at the end of
// its input.
import { Queue } from "bullmq";
import { createInterface } from "node:readline";
import { QUEUE, nowMs, redis } from "./common.mjs";

const msg = "x";
const queue = new Queue(QUEUE, { connection: redis() });
await queue.waitUntilReady();
console.log("ready");
for await (const line of createInterface({ input: process.stdin })) {
  const [run, nText] = line.trim().split(/\s+/);
  const n = Number(nText);
  for (let done = 0; done < n; ) {
    const size = Math.min(500, n - done);
    const enq = nowMs();
    await queue.addBulk(Array.from({ length: size }, () => ({ name: "job", data: { run, enq, msg } })));
    done += size;
  }
  console.log(`enqueued ${n}`);
}
await queue.close();
process.exit(0);
