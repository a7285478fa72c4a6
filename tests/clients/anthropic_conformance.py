"""The official `anthropic` Python SDK against ollabridge's `/v1/messages`.

Usage: python anthropic_conformance.py BRIDGE_URL MODEL SCRIPT_JSON
BRIDGE_URL is a bridge over the tiny-chat llama-server with MODEL mapped to tiny-chat;
SCRIPT_JSON says what the scripted model answers. Prints one line per check and exits
non-zero on the first mismatch.
"""

import json
import sys
from importlib.metadata import version

import anthropic

bridge_url, model, script_path = sys.argv[1:4]
said = json.load(open(script_path))["tiny-chat"]
client = anthropic.Anthropic(base_url=bridge_url, api_key="unused", max_retries=0)
print(f"# anthropic {version('anthropic')}")

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
HELLO = [{"role": "user", "content": "Hi there"}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def fail(name, message):
    print(f"FAIL {name}: {message}")
    sys.exit(1)


def check(name, got, want):
    if got != want:
        fail(name, f"got {got!r}, want {want!r}")
    print(f"ok {name}")


def texts(message):
    return "".join(b.text for b in message.content if b.type == "text")


def tool_uses(message):
    return [(b.name, b.input) for b in message.content if b.type == "tool_use"]


call = (said["tool_call"]["name"], said["tool_call"]["arguments"])

# Whole.
m = client.messages.create(model=model, max_tokens=64, messages=HELLO)
check("create text", texts(m), said["text"])
check("create stop_reason", m.stop_reason, "end_turn")
check("create model echo", m.model, model)
check("create usage", m.usage.output_tokens > 0 and m.usage.input_tokens > 0, True)

# Streamed, with the SDK's helper putting the events together.
with client.messages.stream(model=model, max_tokens=64, messages=HELLO) as stream:
    deltas = "".join(stream.text_stream)
    final = stream.get_final_message()
check("stream text", deltas, said["text"])
check("stream final message", (texts(final), final.stop_reason), (said["text"], "end_turn"))

# A tool_use block, whole and streamed.
m = client.messages.create(model=model, max_tokens=64, messages=ASK, tools=[WEATHER_TOOL])
check("tools create", (tool_uses(m), m.stop_reason), ([call], "tool_use"))
with client.messages.stream(model=model, max_tokens=64, messages=ASK, tools=[WEATHER_TOOL]) as stream:
    final = stream.get_final_message()
check("tools stream", (tool_uses(final), final.stop_reason), ([call], "tool_use"))

# An unknown model: the SDK's own exception, with ollabridge's words.
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=HELLO)
    fail("unknown model", "no error")
except anthropic.NotFoundError as e:
    check("unknown model", (e.status_code, e.body["error"]["type"], e.body["error"]["message"]),
          (404, "not_found_error", "model 'no-such-model' not found"))

print("all checks passed")
