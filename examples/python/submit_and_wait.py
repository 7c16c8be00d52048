"""Submit a job to mcpq serve, wait for it, print its result. Python 3 stdlib only.

    MCPQ_URL=http://127.0.0.1:7717 MCPQ_TOKEN=... python3 submit_and_wait.py "hello"
"""
import json, os, sys, urllib.request

URL = os.environ.get("MCPQ_URL", "http://127.0.0.1:7717")
HEADERS = {"Authorization": "Bearer " + os.environ["MCPQ_TOKEN"], "Content-Type": "application/json"}

def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, headers=HEADERS, method=method)
    with urllib.request.urlopen(req, timeout=90) as resp:
        return resp.status, json.load(resp)

job = {"kind": "agent", "payload": {"steps": [
    {"server": "echo", "tool": "echo", "arguments": {"text": sys.argv[1]}}]}}
_, submitted = call("POST", "/v1/jobs", job)
status, record = call("GET", f"/v1/jobs/{submitted['id']}/result?wait=60s")
if status != 200 or record["status"] != "succeeded":
    sys.exit(f"job {submitted['id']} is {record['status']}: {record.get('error')}")
print(record["result"][0]["result"]["content"][0]["text"])
