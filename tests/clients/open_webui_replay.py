"""Open WebUI's calls on an Ollama connection (open_webui/routers/ollama.py, 0.12.x), replayed
over plain HTTP (stdlib only) and read the way Open WebUI reads the answers.

Usage: python open_webui_replay.py HOST MODEL SCRIPT_JSON
HOST is a bridge over tiny-chat that lists MODEL. Prints one line per check and exits
non-zero on the first mismatch.
"""

import json
import sys
import urllib.error
import urllib.request
from datetime import datetime

host, model, script_path = sys.argv[1:4]
said = json.load(open(script_path))["tiny-chat"]


def check(name, got, want):
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok {name}")


def check_that(name, condition, detail):
    if not condition:
        print(f"FAIL {name}: {detail!r}")
        sys.exit(1)
    print(f"ok {name}")


def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{host}{path}", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers.get("Content-Type"), response.read().decode()
    except urllib.error.HTTPError as err:
        print(f"FAIL {path}: HTTP {err.code} {err.read().decode()}")
        sys.exit(1)


def stream_chat(body):
    """The NDJSON lines of a streamed /api/chat, each checked as Open WebUI's converter needs."""
    status, content_type, text = call("/api/chat", body)
    check_that("chat stream status and type", (status, content_type) == (200, "application/x-ndjson"), (status, content_type))
    lines = [json.loads(line) for line in text.split("\n")[:-1]]  # a blank line would not parse
    # Open WebUI turns any chunk without content, thinking or tool calls into finish_reason "stop".
    empty = [c for c in lines[:-1] if not (c["message"].get("content") or c["message"].get("thinking") or c["message"].get("tool_calls"))]
    check("chat stream no empty chunk before the end", empty, [])
    final = lines[-1]
    check("chat stream done last", [c["done"] for c in lines].count(True), 1)
    usage = [int(final.get(k, 0)) for k in ("prompt_eval_count", "eval_count", "total_duration", "eval_duration")]
    check_that("chat stream usage", final["done"] and final["done_reason"] == "stop" and all(n > 0 for n in usage), final)
    return lines


# Verify connection and the aggregate version: "v" and "-suffix" stripped, parts int()ed.
status, _, text = call("/api/version")
version = json.loads(text)["version"]
check_that("version parts are integers", status == 200 and len(tuple(int(p) for p in version.lstrip("v").split("-")[0].split("."))) == 3, version)

# The model list: every entry needs "model" and "name".
tags = json.loads(call("/api/tags")[2])["models"]
check_that("tags entries have name and model", all(isinstance(m["name"], str) and isinstance(m["model"], str) for m in tags), tags)
check_that("tags list the model", any(m["model"] == model for m in tags), [m["model"] for m in tags])

# The list is annotated from /api/ps with datetime.fromisoformat(expires_at).
ps = json.loads(call("/api/ps")[2])["models"]
check_that("ps expires_at parses", ps and all(datetime.fromisoformat(m["expires_at"]).tzinfo for m in ps), ps)

# A chat with tools, streamed, as the browser's OpenAI-shaped payload converted for Ollama.
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
messages = [{"role": "user", "content": "What is the weather in Paris?"}]
lines = stream_chat({"model": model, "messages": messages, "tools": tools, "stream": True, "options": {}})
calls = [c for line in lines for c in line["message"].get("tool_calls") or []]
check("tool call", [(c["function"]["name"], c["function"]["arguments"]) for c in calls], [(said["tool_call"]["name"], said["tool_call"]["arguments"])])
# Open WebUI's index: tool_call.get("index", function.get("index", 0)); its id: tool_call.get("id") or a uuid.
call_index = calls[0].get("index", calls[0]["function"].get("index", 0))
check_that("tool call index and id", call_index == 0 and str(calls[0].get("id", "")).startswith("call_"), calls[0])

# The next request carries the call as Open WebUI stores it, and the result by tool_call_id.
messages += [
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"index": 0, "id": calls[0]["id"], "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "tool_call_id": calls[0]["id"], "content": json.dumps({"weather": "sunny"})},
]
lines = stream_chat({"model": model, "messages": messages, "tools": tools, "stream": True, "options": {}})
check("answer after tool", "".join(line["message"]["content"] for line in lines), said["after_tool"])

# RAG embeddings.
embed = json.loads(call("/api/embed", {"input": ["Hi there", "Paris"], "model": model, "truncate": True})[2])
check("embed shape", [len(v) for v in embed["embeddings"]], [64, 64])

# The "unload" button.
unload = json.loads(call("/api/generate", {"model": model, "keep_alive": 0, "prompt": ""})[2])
check("unload", (unload["done"], unload["done_reason"], unload["response"]), (True, "unload", ""))

print("all checks passed")
