"""An MCP client of mcpq serve's MCP front, built on the official Python SDK (pip `mcp`,
pinned in tests/mcp-servers/requirements.txt), for tests/e2e/mcp_front.rs.

Each scenario prints JSON lines on stdout, one object per line with a "type" field, that
the Rust test asserts on; anything that goes wrong raises (a traceback on stderr, exit 1).

Scenarios (HTTP ones take URL = http://HOST:PORT/mcp, --token and --mode; all but
`plain` declare the tasks extension):
  plain URL      tools/list; echo__echo {"text": --text}, a plain call
  progress URL   echo__progress_steps {"steps": 4}, a plain call with a progress
                 callback; prints the reports it got
  task URL       echo__sleep_ms {"ms": --ms} as a task, tasks/get until it ends; then
                 echo__echo through the SDK's call_tool (it polls the task)
  create URL     --tool with --args (JSON) as a task; prints the created task
  get URL        tasks/get --task-id until it ends (any mcpq serve can answer)
  cancel URL     tasks/cancel --task-id, then tasks/get until it ends
  queue URL      submit_job (an echo job), wait_job; submit_job of an invalid job
  stdio          mcpq-serve --stdio (--command, --config, --mode; REDIS_URL from the
                 environment): tools/list, echo__echo plainly

Tasks: mcpq's front (rmcp 3.11) implements the SEP-2663 tasks extension
("io.modelcontextprotocol/tasks"): a client that declares it gets a flat
{resultType: "task", taskId, status, ...} from tools/call, then tasks/get (the task with
its result or error inlined) and tasks/cancel. The SDK has no task API of its own; the
extension hooks (ClientExtension + ResultClaim, active on the 2026-07-28 wire the SDK
negotiates with rmcp) and hand-made request types do it.
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any, Literal

import mcp_types as types
from mcp.client import Client, ClientExtension, ResultClaim
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = ("completed", "failed", "cancelled")


class CreateTaskResult(types.Result):
    """tools/call answered with a task (SEP-2663)."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class DetailedTask(types.Result):
    """tasks/get: the task, and its result or error once it has one."""

    result_type: str | None = None
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str | None = None
    last_updated_at: str | None = None
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class AnyResult(types.Result):
    model_config = {"extra": "allow"}


class TaskIdParams(types.RequestParams):
    task_id: str


class TasksGet(types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    # The 2026-07-28 HTTP wire wants Mcp-Name = params.taskId for tasks/*; the SDK's own
    # list of name-bearing methods lacks them.
    name_param = "taskId"


class TasksCancel(types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


async def resolve_task(created: CreateTaskResult, ctx: Any) -> types.CallToolResult:
    """What the SDK's high-level call_tool() does with a task: poll it to its end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        task = await ctx.session.send_request(TasksGet(params=TaskIdParams(task_id=created.task_id)), DetailedTask)
        if task.status == "completed":
            return types.CallToolResult.model_validate(task.result)
        if task.status in TERMINAL:
            raise RuntimeError(f"task {created.task_id} ended {task.status}: {task.error}")
        if loop.time() > deadline:
            raise TimeoutError(f"task {created.task_id} is still {task.status}")
        await asyncio.sleep(0.1)


class TasksExtension(ClientExtension):
    """Declares the tasks extension; tools/call may then answer with a task."""

    identifier = TASKS

    def claims(self):
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=resolve_task)]


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"type": kind, **fields}), flush=True)


def dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


async def tasks_get(client: Client, task_id: str) -> DetailedTask:
    return await client.session.send_request(TasksGet(params=TaskIdParams(task_id=task_id)), DetailedTask)


async def poll(client: Client, task_id: str, timeout: float) -> DetailedTask:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        task = await tasks_get(client, task_id)
        if task.status in TERMINAL:
            return task
        if loop.time() > deadline:
            raise TimeoutError(f"task {task_id} is still {task.status} after {timeout} s")
        # Faster than the server's suggested interval (1 s): the tests are timed.
        await asyncio.sleep(0.1)


async def create_task(client: Client, tool: str, args: dict[str, Any]) -> CreateTaskResult:
    if client.protocol_version != "2026-07-28":
        raise RuntimeError(f"negotiated {client.protocol_version}: task claims need 2026-07-28")
    created = await client.session.call_tool(tool, args, allow_claimed=True)
    if not isinstance(created, CreateTaskResult):
        raise RuntimeError(f"{tool} answered without a task: {created!r}")
    return created


def tool_text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def emit_call(kind: str, result: types.CallToolResult) -> None:
    emit(
        kind,
        is_error=bool(result.is_error),
        text=tool_text(result),
        structured=result.structured_content,
    )


@contextlib.asynccontextmanager
async def connect(a: argparse.Namespace, tasks: bool) -> AsyncIterator[Client]:
    """A client of the front at a.url with a.token, in a.mode; with `tasks`, it declares
    the tasks extension (then every gateway call answers with a task)."""
    headers = {"Authorization": f"Bearer {a.token}"} if a.token else None
    async with create_mcp_http_client(headers=headers) as http_client:
        transport = streamable_http_client(a.url, http_client=http_client)
        extensions = [TasksExtension()] if tasks else []
        async with Client(transport, mode=a.mode, extensions=extensions) as client:
            emit("connected", protocol=client.protocol_version, tasks=tasks)
            yield client


async def http(a: argparse.Namespace) -> None:
    # A plain client has no tasks extension: a gateway call waits for its job.
    async with connect(a, tasks=a.scenario not in ("plain", "progress")) as client:
        await SCENARIOS[a.scenario](client, a)


async def plain(client: Client, a: argparse.Namespace) -> None:
    tools = await client.list_tools()
    emit("tools", names=[t.name for t in tools.tools])
    emit_call("plain", await client.call_tool("echo__echo", {"text": a.text}))


async def progress(client: Client, a: argparse.Namespace) -> None:
    # A plain call with a progress callback: the SDK sends a progressToken, the front
    # forwards the server's reports on it while the job runs.
    seen: list[dict[str, Any]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        seen.append({"progress": done, "total": total, "message": message})

    result = await client.call_tool("echo__progress_steps", {"steps": 4, "ms": 200}, progress_callback=on_progress)
    emit("progress", reports=seen)
    emit_call("plain", result)


async def task(client: Client, a: argparse.Namespace) -> None:
    # Driven by hand ...
    created = await create_task(client, "echo__sleep_ms", {"ms": a.ms})
    emit("created", task=dump(created))
    emit("got", task=dump(await tasks_get(client, created.task_id)))
    emit("ended", task=dump(await poll(client, created.task_id, a.timeout)))
    # ... and through the SDK's call_tool, which resolves the task it gets by polling.
    emit_call("resolved", await client.call_tool("echo__echo", {"text": a.text}))


async def create(client: Client, a: argparse.Namespace) -> None:
    created = await create_task(client, a.tool, json.loads(a.args))
    emit("created", task=dump(created))


async def get(client: Client, a: argparse.Namespace) -> None:
    emit("ended", task=dump(await poll(client, a.task_id, a.timeout)))


async def cancel(client: Client, a: argparse.Namespace) -> None:
    ack = await client.session.send_request(TasksCancel(params=TaskIdParams(task_id=a.task_id)), AnyResult)
    emit("cancel_ack", ack=dump(ack))
    emit("ended", task=dump(await poll(client, a.task_id, a.timeout)))


async def queue(client: Client, a: argparse.Namespace) -> None:
    job = {
        "kind": "agent",
        "payload": {"steps": [{"server": "echo", "tool": "echo", "arguments": {"text": a.text}}]},
    }
    submitted = await client.call_tool("submit_job", {"job": job})
    emit_call("submitted", submitted)
    job_id = (submitted.structured_content or {}).get("id")
    emit_call("waited", await client.call_tool("wait_job", {"id": job_id, "wait": "20s"}))
    # A server no config names: refused before anything is enqueued.
    invalid = {"kind": "agent", "payload": {"steps": [{"server": "nope", "tool": "t", "arguments": {}}]}}
    emit_call("invalid", await client.call_tool("submit_job", {"job": invalid}))


async def stdio(a: argparse.Namespace) -> None:
    env = {"REDIS_URL": os.environ["REDIS_URL"]} if "REDIS_URL" in os.environ else {}
    params = StdioServerParameters(command=a.command, args=["--stdio", "--config", a.config], env=env)
    async with Client(params, mode=a.mode) as client:
        emit("connected", protocol=client.protocol_version)
        tools = await client.list_tools()
        emit("tools", names=[t.name for t in tools.tools])
        emit_call("plain", await client.call_tool("echo__echo", {"text": a.text}))


SCENARIOS = {"plain": plain, "progress": progress, "task": task, "create": create, "get": get, "cancel": cancel, "queue": queue}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=[*SCENARIOS, "stdio"])
    ap.add_argument("url", nargs="?", help="http://HOST:PORT/mcp (HTTP scenarios)")
    ap.add_argument("--token", help="bearer token")
    ap.add_argument("--text", default="hello from the Python SDK")
    ap.add_argument("--mode", default="auto", help="auto (the SDK picks: 2026-07-28 with mcpq) | legacy (initialize, 2025-11-25)")
    ap.add_argument("--ms", type=int, default=1500, help="echo__sleep_ms's sleep (task)")
    ap.add_argument("--tool", default="echo__sleep_ms", help="the tool create calls")
    ap.add_argument("--args", default="{}", help="its arguments, JSON")
    ap.add_argument("--task-id", help="the task get and cancel read")
    ap.add_argument("--timeout", type=float, default=30, help="longest wait for a task, seconds")
    ap.add_argument("--command", help="mcpq-serve (stdio)")
    ap.add_argument("--config", help="mcpq.toml (stdio)")
    a = ap.parse_args()
    if a.scenario == "stdio":
        asyncio.run(stdio(a))
    elif not a.url:
        sys.exit(f"{a.scenario} needs the URL of /mcp")
    else:
        asyncio.run(http(a))


if __name__ == "__main__":
    main()
