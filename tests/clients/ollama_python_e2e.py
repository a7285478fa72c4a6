"""Drives ollabridge with the official `ollama` Python client and checks exact answers.

Usage: python ollama_python_e2e.py HOST SCRIPT_JSON MODEL chat|think
"chat" expects a bridge over tiny-chat, "think" one over tiny-think.
Exits non-zero on the first mismatch; prints one line per check.
"""

import json
import sys

import ollama

host, script_path, model = sys.argv[1], sys.argv[2], sys.argv[3]
mode = sys.argv[4]
script = json.load(open(script_path))
chat_script = script["tiny-chat"]
client = ollama.Client(host=host)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def check(name, got, want):
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok {name}")


def check_final(name, r):
    check(f"{name} done", r.done, True)
    check(f"{name} done_reason", r.done_reason, "stop")
    for field in ("total_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        value = getattr(r, field)
        if not isinstance(value, int) or value <= 0:
            print(f"FAIL {name} {field}: {value!r} is not a positive integer")
            sys.exit(1)
    check(f"{name} load_duration", r.load_duration, 0)
    check(f"{name} model echo", r.model, model)


hello = [{"role": "user", "content": "Hi there"}]


def chat_checks():
    r = client.chat(model=model, messages=hello, stream=False)
    check("chat text", r.message.content, chat_script["text"])
    check("chat role", r.message.role, "assistant")
    check_final("chat", r)

    parts = list(client.chat(model=model, messages=hello, stream=True))
    check("chat stream text", "".join(p.message.content or "" for p in parts), chat_script["text"])
    check("chat stream one final", [p.done for p in parts].count(True), 1)
    check("chat stream final last", parts[-1].done, True)
    check("chat stream no empty chunks", all(p.message.content for p in parts[:-1]), True)
    check_final("chat stream", parts[-1])

    r = client.generate(model=model, prompt="Once upon a time", stream=False)
    check("generate text", r.response, chat_script["text"])
    check_final("generate", r)

    parts = list(client.generate(model=model, prompt="Once upon a time", stream=True))
    check("generate stream text", "".join(p.response for p in parts), chat_script["text"])
    check_final("generate stream", parts[-1])

    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    for stream in (False, True):
        label = "stream" if stream else "whole"
        if stream:
            parts = list(client.chat(model=model, messages=ask, tools=[WEATHER_TOOL], stream=True))
            calls = [c for p in parts for c in (p.message.tool_calls or [])]
            final = parts[-1]
            check(f"tool call {label} not in final chunk", final.message.tool_calls, None)
        else:
            final = client.chat(model=model, messages=ask, tools=[WEATHER_TOOL], stream=False)
            calls = final.message.tool_calls or []
        check(f"tool call {label} count", len(calls), 1)
        check(f"tool call {label} name", calls[0].function.name, chat_script["tool_call"]["name"])
        check(f"tool call {label} arguments", dict(calls[0].function.arguments), chat_script["tool_call"]["arguments"])
        check(f"tool call {label} done_reason", final.done_reason, "stop")

    history = ask + [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": json.dumps({"weather": "sunny"})},
    ]
    r = client.chat(model=model, messages=history, tools=[WEATHER_TOOL], stream=False)
    check("after tool text", r.message.content, chat_script["after_tool"])

    models = [m.model for m in client.list().models]
    check("list has model", f"{model}:latest" in models or model in models, True)


def think_checks():
    think_script = script["tiny-think"]
    r = client.chat(model=model, messages=hello, think=True, stream=False)
    check("think thinking", (r.message.thinking or "").strip(), think_script["thinking"])
    check("think answer", r.message.content, think_script["answer"])
    parts = list(client.chat(model=model, messages=hello, think=True, stream=True))
    check("think stream thinking", "".join(p.message.thinking or "" for p in parts).strip(), think_script["thinking"])
    check("think stream answer", "".join(p.message.content or "" for p in parts), think_script["answer"])
    r = client.chat(model=model, messages=hello, think=False, stream=False)
    check("think off thinking", r.message.thinking, None)
    check("think off answer", r.message.content, think_script["text"])


if mode == "chat":
    chat_checks()
else:
    think_checks()

try:
    client.chat(model="no-such-model", messages=hello)
    print("FAIL unknown model: no error")
    sys.exit(1)
except ollama.ResponseError as e:
    check("unknown model status", e.status_code, 404)
    check("unknown model error", e.error, "model 'no-such-model' not found")

print("all checks passed")
