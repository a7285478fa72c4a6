"""The official `openai` Python client's Responses API against ollabridge's `/v1/responses`.

Usage: python openai_responses.py BRIDGE_URL MODEL SCRIPT_JSON
BRIDGE_URL is a bridge over the tiny-chat llama-server with MODEL mapped to tiny-chat;
SCRIPT_JSON says what the scripted model answers. Prints one line per check and exits
non-zero on the first mismatch.
"""

import json
import sys
from importlib.metadata import version

import openai

bridge_url, model, script_path = sys.argv[1:4]
said = json.load(open(script_path))["tiny-chat"]
client = openai.OpenAI(base_url=f"{bridge_url}/v1", api_key="unused", max_retries=0)
print(f"# openai {version('openai')}")

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def fail(name, message):
    print(f"FAIL {name}: {message}")
    sys.exit(1)


def check(name, got, want):
    if got != want:
        fail(name, f"got {got!r}, want {want!r}")
    print(f"ok {name}")


call = (said["tool_call"]["name"], said["tool_call"]["arguments"])

# Whole.
r = client.responses.create(model=model, input="Hi there")
check("create text", r.output_text, said["text"])
check("create status", r.status, "completed")
check("create model echo", r.model, model)

# Streamed: the text deltas, then the completed response.
deltas, completed = "", None
for event in client.responses.create(model=model, input="Hi there", stream=True):
    if event.type == "response.output_text.delta":
        deltas += event.delta
    elif event.type == "response.completed":
        completed = event.response
check("stream text", deltas, said["text"])
check("stream completed", (completed.output_text, completed.usage.output_tokens > 0), (said["text"], True))

# A function call, whole and streamed.
r = client.responses.create(model=model, input="What is the weather in Paris?", tools=[WEATHER_TOOL])
calls = [(o.name, json.loads(o.arguments)) for o in r.output if o.type == "function_call"]
check("tools create", calls, [call])
done = [e.item for e in client.responses.create(model=model, input="What is the weather in Paris?",
                                                 tools=[WEATHER_TOOL], stream=True)
        if e.type == "response.output_item.done" and e.item.type == "function_call"]
check("tools stream", [(i.name, json.loads(i.arguments)) for i in done], [call])

# An unknown model.
try:
    client.responses.create(model="no-such-model", input="Hi")
    fail("unknown model", "no error")
except openai.NotFoundError as e:
    check("unknown model", (e.status_code, e.body["message"], e.body["code"]),
          (404, "model 'no-such-model' not found", "model_not_found"))

print("all checks passed")
