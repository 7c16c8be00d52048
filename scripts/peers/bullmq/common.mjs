// Shared by the BullMQ peer's worker.mjs and enqueue.mjs (scripts/bench-peers): the
// environment the harness sets (the same variables as scripts/peers/py/common.py: BENCH_*),
// the Redis connections, and the MCP calls through the official TypeScript SDK
// (@modelcontextprotocol/sdk: Client over StdioClientTransport, its defaults otherwise:
// the server's stderr is inherited, as in the SDK's examples).
import { Redis } from "ioredis";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport, getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";

export const env = {
  redisUrl: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379/15",
  run: process.env.BENCH_RUN ?? "none",
  workload: process.env.BENCH_WORKLOAD ?? "noop",
  timeoutS: process.env.BENCH_TIMEOUT ? Number(process.env.BENCH_TIMEOUT) : null,
  serverCmd: process.env.BENCH_SERVER_CMD ?? "node",
  serverArgs: JSON.parse(process.env.BENCH_SERVER_ARGS ?? "[]"),
  serverTag: process.env.BENCH_SERVER_TAG ?? "untagged",
};
export const QUEUE = "bench";

// BullMQ's blocking connections need maxRetriesPerRequest: null (its docs say so).
export function redis() {
  return new Redis(env.redisUrl, { maxRetriesPerRequest: null });
}

export const nowMs = () => Date.now();

// A new client + server + session, tagged so the harness can count leftovers.
export async function connect() {
  const client = new Client({ name: "bench-peers-bullmq", version: "1.0.0" });
  const transport = new StdioClientTransport({
    command: env.serverCmd,
    args: env.serverArgs,
    env: { ...getDefaultEnvironment(), BENCH_PEERS_SERVER_TAG: env.serverTag },
  });
  await client.connect(transport);
  return client;
}

export async function echo(client, msg) {
  const result = await client.callTool({ name: "echo", arguments: { message: msg } });
  const text = result.content?.[0]?.text ?? "";
  if (result.isError || !text.includes(msg)) throw new Error(`echo answered ${JSON.stringify(text)}`);
}
