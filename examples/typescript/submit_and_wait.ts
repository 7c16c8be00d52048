// Submit a job to mcpq serve, wait for it, print its result. Node 18+ (global fetch).
//
//   MCPQ_URL=http://127.0.0.1:7717 MCPQ_TOKEN=... node submit_and_wait.js "hello"

const url = process.env.MCPQ_URL ?? "http://127.0.0.1:7717";
const headers = { Authorization: `Bearer ${process.env.MCPQ_TOKEN}`, "Content-Type": "application/json" };

async function call(method: string, path: string, body?: unknown): Promise<[number, any]> {
  const resp = await fetch(url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return [resp.status, await resp.json()];
}

const job = { kind: "agent", payload: { steps: [{ server: "echo", tool: "echo", arguments: { text: process.argv[2] } }] } };
const [, submitted] = await call("POST", "/v1/jobs", job);
const [status, record] = await call("GET", `/v1/jobs/${submitted.id}/result?wait=60s`);
if (status !== 200 || record.status !== "succeeded") {
  console.error(`job ${submitted.id} is ${record.status}: ${JSON.stringify(record.error)}`);
  process.exit(1);
}
console.log(record.result[0].result.content[0].text);
