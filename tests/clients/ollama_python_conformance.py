"""The official `ollama` Python client (0.5.1 and 0.6.x) against ollabridge, every call it has.

Usage: python ollama_python_conformance.py CHAT_HOST CHAT_MODEL THINK_HOST THINK_MODEL LLAMA_URL SCRIPT_JSON
CHAT_HOST is a bridge over the tiny-chat llama-server at LLAMA_URL, THINK_HOST one over
tiny-think; SCRIPT_JSON says what the scripted models answer. Prints one line per check and
exits non-zero on the first mismatch.
"""

import json
import math
import re
import sys
import urllib.request
from datetime import datetime
from importlib.metadata import version

import ollama

chat_host, chat_model, think_host, think_model, llama_url, script_path = sys.argv[1:7]
script = json.load(open(script_path))
said, thought = script["tiny-chat"], script["tiny-think"]
client = ollama.Client(host=chat_host)
think_client = ollama.Client(host=think_host)
ollama_version = tuple(int(p) for p in version("ollama").split("."))
print(f"# ollama-python {version('ollama')}")

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HELLO = [{"role": "user", "content": "Hi there"}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ANSWERED = ASK + [
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": json.dumps({"weather": "sunny"})},
]


def fail(name, message):
    print(f"FAIL {name}: {message}")
    sys.exit(1)


def check(name, got, want):
    if got != want:
        fail(name, f"got {got!r}, want {want!r}")
    print(f"ok {name}")


def check_that(name, condition, detail):
    if not condition:
        fail(name, detail)
    print(f"ok {name}")


def check_counts(name, final):
    """The final chunk: done, done_reason "stop", positive integer counts and durations."""
    check(f"{name} done", final.done, True)
    check(f"{name} done_reason", final.done_reason, "stop")
    fields = ("prompt_eval_count", "eval_count", "total_duration", "eval_duration")
    values = {f: getattr(final, f) for f in fields}
    check_that(f"{name} counts", all(type(v) is int and v > 0 for v in values.values()), values)


def llama(path, body):
    """Asks llama-server itself, for the values the bridge must pass on unchanged."""
    request = urllib.request.Request(f"{llama_url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))


def same_vector(got, want):
    return len(got) == len(want) and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, want))


served_ctx = json.load(urllib.request.urlopen(f"{llama_url}/props"))["default_generation_settings"]["n_ctx"]

# Chat and generate, whole and streamed.
r = client.chat(model=chat_model, messages=HELLO, stream=False)
check("chat text", r.message.content, said["text"])
check("chat role", r.message.role, "assistant")
check("chat model echo", r.model, chat_model)
check_counts("chat", r)

parts = list(client.chat(model=chat_model, messages=HELLO, stream=True))
check("chat stream text", "".join(p.message.content or "" for p in parts), said["text"])
check("chat stream one done, last", [p.done for p in parts], [False] * (len(parts) - 1) + [True])
check("chat stream no empty chunks", [p for p in parts[:-1] if not p.message.content], [])
check_counts("chat stream", parts[-1])

r = client.generate(model=chat_model, prompt="Once upon a time", stream=False)
check("generate text", r.response, said["text"])
check_counts("generate", r)

parts = list(client.generate(model=chat_model, prompt="Once upon a time", stream=True))
check("generate stream text", "".join(p.response or "" for p in parts), said["text"])
check_counts("generate stream", parts[-1])

# Tools: the call (object arguments) in a chunk of its own, then the answer to its result.
r = client.chat(model=chat_model, messages=ASK, tools=[WEATHER_TOOL], stream=False)
calls = r.message.tool_calls or []
check("tools calls", [(c.function.name, dict(c.function.arguments)) for c in calls], [(said["tool_call"]["name"], said["tool_call"]["arguments"])])
check("tools done_reason", r.done_reason, "stop")

parts = list(client.chat(model=chat_model, messages=ASK, tools=[WEATHER_TOOL], stream=True))
calls = [c for p in parts for c in (p.message.tool_calls or [])]
check("tools stream calls", [(c.function.name, dict(c.function.arguments)) for c in calls], [(said["tool_call"]["name"], said["tool_call"]["arguments"])])
check("tools stream call before done", [p.done for p in parts if p.message.tool_calls], [False])
check("tools stream done_reason", parts[-1].done_reason, "stop")

r = client.chat(model=chat_model, messages=ANSWERED, tools=[WEATHER_TOOL], stream=False)
check("tool result answer", r.message.content, said["after_tool"])
parts = list(client.chat(model=chat_model, messages=ANSWERED, tools=[WEATHER_TOOL], stream=True))
check("tool result stream answer", "".join(p.message.content or "" for p in parts), said["after_tool"])
check_counts("tool result stream", parts[-1])

# Model metadata.
listed = {m.model: m for m in client.list().models}
check_that("list has model", f"{chat_model}:latest" in listed, sorted(listed))
entry = listed[f"{chat_model}:latest"]
check_that("list entry typed", isinstance(entry.modified_at, datetime) and isinstance(entry.size, int) and entry.size >= 0, entry)

show = client.show(chat_model)
check_that("show capabilities", {"completion", "tools"} <= set(show.capabilities or []), show.capabilities)
check_that("show not vision, not thinking", not {"vision", "thinking"} & set(show.capabilities), show.capabilities)
arch = show.modelinfo.get("general.architecture")
check_that("show architecture", isinstance(arch, str) and arch != "", show.modelinfo)
check("show context_length", show.modelinfo.get(f"{arch}.context_length"), served_ctx)
check_that("show parameters num_ctx", re.search(rf"(^|\n)num_ctx\s+{served_ctx}(\n|$)", show.parameters or ""), show.parameters)

think_show = think_client.show(think_model)
check_that("show thinking capability", "thinking" in (think_show.capabilities or []), think_show.capabilities)

running = {m.model: m for m in client.ps().models}
check_that("ps has model", f"{chat_model}:latest" in running, sorted(running))
loaded = running[f"{chat_model}:latest"]
check_that("ps sizes", isinstance(loaded.size, int) and isinstance(loaded.size_vram, int), loaded)
check_that("ps expires_at", isinstance(loaded.expires_at, datetime) and loaded.expires_at.tzinfo is not None, loaded.expires_at)
if ollama_version >= (0, 6):
    check("ps context_length", loaded.context_length, served_ctx)

# Embeddings: llama-server's own vectors, 64 numbers each.
direct = [d["embedding"] for d in llama("/v1/embeddings", {"input": ["Hi there", "Paris"]})["data"]]
e = client.embed(model=chat_model, input="Hi there")
check("embed string shape", [len(v) for v in e.embeddings], [64])
check_that("embed string values", same_vector(e.embeddings[0], direct[0]), e.embeddings[0][:4])
e = client.embed(model=chat_model, input=["Hi there", "Paris"])
check("embed list shape", [len(v) for v in e.embeddings], [64, 64])
check_that("embed list values", all(same_vector(g, w) for g, w in zip(e.embeddings, direct)), [v[:4] for v in e.embeddings])
e = client.embeddings(model=chat_model, prompt="Hi there")
check_that("embeddings legacy values", len(e.embedding) == 64 and same_vector(e.embedding, direct[0]), e.embedding[:4])

# Pull of a listed model: nothing to download, Ollama's success sequence.
progress = list(client.pull(chat_model, stream=True))
check("pull stream ends with success", progress[-1].status, "success")
check("pull whole", client.pull(chat_model, stream=False).status, "success")
try:
    client.pull("no-such-model", stream=False)
    fail("pull unknown", "no error")
except ollama.ResponseError as err:
    check_that("pull unknown refused", err.status_code >= 400 and "no-such-model" in err.error, (err.status_code, err.error))

# The library has no version(); its own HTTP client asks.
v = client._client.get("/api/version").json()["version"]
check_that("version dotted >= 0.6.4", tuple(int(p) for p in v.split(".")) >= (0, 6, 4), v)

try:
    client.chat(model="no-such-model", messages=HELLO)
    fail("unknown model", "no error")
except ollama.ResponseError as err:
    check("unknown model error", (err.status_code, err.error), (404, "model 'no-such-model' not found"))

# Thinking.
r = think_client.chat(model=think_model, messages=HELLO, think=True, stream=False)
check("think thinking", (r.message.thinking or "").strip(), thought["thinking"])
check("think answer", r.message.content, thought["answer"])
check_counts("think", r)
parts = list(think_client.chat(model=think_model, messages=HELLO, think=True, stream=True))
check("think stream thinking", "".join(p.message.thinking or "" for p in parts).strip(), thought["thinking"])
check("think stream answer", "".join(p.message.content or "" for p in parts), thought["answer"])
r = think_client.generate(model=think_model, prompt="Hi there", think=True, stream=False)
check("think generate", ((r.thinking or "").strip(), r.response), (thought["thinking"], thought["answer"]))
r = think_client.chat(model=think_model, messages=HELLO, think=False, stream=False)
check("think off", (r.message.thinking, r.message.content), (None, thought["text"]))

print("all checks passed")
