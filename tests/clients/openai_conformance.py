"""The official `openai` Python client against ollabridge's OpenAI routes (`/v1`).

Usage: python openai_conformance.py BRIDGE_URL MODEL LLAMA_URL SCRIPT_JSON
BRIDGE_URL is a bridge over the tiny-chat llama-server at LLAMA_URL with MODEL mapped to
tiny-chat; SCRIPT_JSON says what the scripted model answers. Prints one line per check,
exits non-zero on the first mismatch, and prints `tokens LABEL PROMPT COMPLETION` for each
request the bridge should log, with the counts llama-server itself reports for it.
"""

import json
import math
import sys
import urllib.request
from importlib.metadata import version

import openai

bridge_url, model, llama_url, script_path = sys.argv[1:5]
said = json.load(open(script_path))["tiny-chat"]
client = openai.OpenAI(base_url=f"{bridge_url}/v1", api_key="unused", max_retries=0)
print(f"# openai {version('openai')}")

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
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"weather": "sunny"})},
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


def llama(path, body):
    """Asks llama-server itself, for what the bridge must pass on unchanged."""
    body = {"model": "tiny-chat", **body}
    request = urllib.request.Request(f"{llama_url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))


def reference(label, path, body):
    """llama-server's own counts for this request, printed for the Rust side's row checks."""
    usage = llama(path, body)["usage"]
    counts = (usage["prompt_tokens"], usage.get("completion_tokens"))
    print(f"tokens {label} {counts[0]} {'null' if counts[1] is None else counts[1]}")
    return counts


def counts(usage):
    return (usage.prompt_tokens, usage.completion_tokens) if usage else None


# Models: the mapped name and llama-server's own.
check("models list", [m.id for m in client.models.list()], [model, "tiny-chat"])
check("models retrieve", client.models.retrieve(model).id, model)

# Chat, whole.
want = reference("chat", "/v1/chat/completions", {"messages": HELLO})
r = client.chat.completions.create(model=model, messages=HELLO)
check("chat text", r.choices[0].message.content, said["text"])
check("chat role", r.choices[0].message.role, "assistant")
check("chat finish_reason", r.choices[0].finish_reason, "stop")
check("chat model echo", r.model, model)
check("chat usage", counts(r.usage), want)

# Streamed without stream_options: no usage anywhere, every chunk has a choice.
reference("stream", "/v1/chat/completions", {"messages": HELLO})
chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True))
check("stream text", "".join(c.choices[0].delta.content or "" for c in chunks), said["text"])
check("stream no usage", [c.usage for c in chunks if c.usage is not None], [])
check("stream no empty choices", [c for c in chunks if not c.choices], [])
check("stream finish_reason", chunks[-1].choices[0].finish_reason, "stop")

# Streamed with usage asked for: one last chunk without choices carries it.
want = reference("stream usage", "/v1/chat/completions", {"messages": HELLO})
chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}))
check("stream usage text", "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), said["text"])
check("stream usage last chunk", (chunks[-1].choices, counts(chunks[-1].usage)), ([], want))
check("stream usage only once", len([c for c in chunks if c.usage is not None]), 1)

# Tools, whole and streamed, then the answer to the tool's result.
call = (said["tool_call"]["name"], said["tool_call"]["arguments"])
reference("tools", "/v1/chat/completions", {"messages": ASK, "tools": [WEATHER_TOOL]})
r = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER_TOOL])
calls = r.choices[0].message.tool_calls or []
check("tools call", [(c.function.name, json.loads(c.function.arguments)) for c in calls], [call])
check("tools finish_reason", r.choices[0].finish_reason, "tool_calls")

reference("tools stream", "/v1/chat/completions", {"messages": ASK, "tools": [WEATHER_TOOL]})
name, arguments = "", ""
for c in client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER_TOOL], stream=True):
    for fragment in (c.choices[0].delta.tool_calls or []) if c.choices else []:
        name += fragment.function.name or ""
        arguments += fragment.function.arguments or ""
check("tools stream call", (name, json.loads(arguments)), call)

reference("tool result", "/v1/chat/completions", {"messages": ANSWERED, "tools": [WEATHER_TOOL]})
r = client.chat.completions.create(model=model, messages=ANSWERED, tools=[WEATHER_TOOL])
check("tool result answer", r.choices[0].message.content, said["after_tool"])

# Legacy completions.
want = reference("completions", "/v1/completions", {"prompt": "Once upon a time"})
r = client.completions.create(model=model, prompt="Once upon a time")
check("completions text", r.choices[0].text, said["completion"])
check("completions usage", counts(r.usage), want)

# Embeddings: the SDK asks for base64 unless told otherwise; both decode to llama-server's vector.
direct = llama("/v1/embeddings", {"input": ["Hi there"]})["data"][0]["embedding"]
width = len(direct)
for encoding in ["base64", "float"]:
    want = reference(f"embeddings {encoding}", "/v1/embeddings", {"input": ["Hi there"]})
    kwargs = {"encoding_format": encoding} if encoding == "float" else {}
    e = client.embeddings.create(model=model, input="Hi there", **kwargs)
    got = e.data[0].embedding
    check(f"embeddings {encoding} length", len(got), width)
    check_that(f"embeddings {encoding} values", all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, direct)), got[:4])
    check(f"embeddings {encoding} usage", e.usage.prompt_tokens, want[0])

# Errors: OpenAI's exceptions with ollabridge's words.
try:
    client.chat.completions.create(model="no-such-model", messages=HELLO)
    fail("unknown model", "no error")
except openai.NotFoundError as err:
    check("unknown model", (err.status_code, err.body["message"], err.type, err.code), (404, "model 'no-such-model' not found", "invalid_request_error", "model_not_found"))

print("all checks passed")
