"""Home Assistant's Ollama integration, replayed call for call with its pinned client (ollama 0.5.1).

Usage: python home_assistant_replay.py HOST MODEL listed|pull SCRIPT_JSON
HOST is a bridge over tiny-chat. MODEL is what the user picked: a name the bridge lists
verbatim ("listed", e.g. HA's catalogue value "llama3.2:latest") or one typed without a tag
that the listing does not match, so HA pulls it first ("pull"). Prints one line per check
and exits non-zero on the first mismatch.

What HA does (homeassistant/components/ollama, release 2026.2.3):
- config flow: AsyncClient(host).list() under a 5 s timeout; the model picker compares the
  chosen name with the listed `model` names verbatim and, when absent, awaits pull(model)
  (POST /api/pull {"model", "insecure": false, "stream": false});
- conversation: chat(model, messages=[system, user, ...], tools=<HA tool schemas or None>,
  stream=True, keep_alive="-1s", options={"num_ctx": 8192.0}) with `think` and `format`
  absent; tool calls are taken from any chunk and their arguments read with `.items()`; the
  next request carries the assistant turn (tool_calls without id, content dropped by the
  client when empty) and a tool message holding only the JSON of the result.
"""

import asyncio
import json
import sys
from importlib.metadata import version

import ollama
from ollama import Message

host, model, expect, script_path = sys.argv[1:5]
said = json.load(open(script_path))["tiny-chat"]
print(f"# Home Assistant replay with ollama-python {version('ollama')}, model {model!r}")

# The request HA 2026.2 builds (homeassistant/helpers/llm.py, conversation/chat_log.py,
# ollama/entity.py) for a home whose Assist exposes one script, get_weather, and no entities:
# the default instructions, then the Assist API prompt for that case; the intent tools without
# a platform restriction, GetDateTime, and the script as a tool, each in _format_tool's shape
# with the parameters voluptuous-openapi makes of the intent's slot schema. ollama-python then
# drops what its Tool model does not know (minLength, minimum, maximum), as it does for HA.
# This is about 3,200 of a bench slot's 4,096 tokens on the second turn: the tiny tokenizer
# spends a token per byte and three per space. Exposing a light would add HA's live-context
# prompt, the area overview, HassLightSet and GetLiveContext: about 7,000 tokens.
DEFAULT_INSTRUCTIONS_PROMPT = (
    "You are a voice assistant for Home Assistant.\n"
    "Answer questions about the world truthfully.\n"
    "Answer in plain text. Keep it simple and to the point.\n"
)
NO_ENTITIES_PROMPT = (
    "Only if the user wants to control a device, tell them to expose entities to their voice assistant in Home Assistant."
)
# chat_log joins the rendered parts with newlines; Jinja drops a template's last newline.
SYSTEM = "\n".join([DEFAULT_INSTRUCTIONS_PROMPT.rstrip("\n"), NO_ENTITIES_PROMPT])
# Without an LLM API there are no tools, and the date goes into the prompt instead of GetDateTime.
SYSTEM_NO_API = "\n".join(
    [DEFAULT_INSTRUCTIONS_PROMPT.rstrip("\n"), "Current time is 18:30:00. Today's date is 2026-02-14."]
)

# ServiceIntentHandler.slot_schema: vol.Any("name", "area", "floor") unfolded into three
# optional properties, the domain list, and the device classes HassTurnOn/Off can target.
TARGET = {
    slot: {"minLength": 1, "description": "At least one of ['name', 'area', 'floor'] must be provided", "type": "string"}
    for slot in ("name", "area", "floor")
}
ON_OFF_DEVICE_CLASSES = [
    *["identify", "restart", "update"],  # button
    *["awning", "blind", "curtain", "damper", "door", "garage", "gate", "shade", "shutter", "window"],  # cover
    *["water", "gas"],  # valve
    *["outlet", "switch"],  # switch
    *["tv", "speaker", "receiver"],  # media_player
]
ON_OFF_PARAMETERS = {
    "type": "object",
    "properties": {
        **TARGET,
        "domain": {"type": "array", "items": {"type": "string"}},
        "device_class": {"type": "array", "items": {"enum": ON_OFF_DEVICE_CLASSES}},
    },
    "required": [],
}


def ha_tool(name, parameters, description):
    """HA's _format_tool: name, parameters, then the description when there is one."""
    return {"type": "function", "function": {"name": name, "parameters": parameters, "description": description}}


TOOLS = [
    ha_tool(
        "HassTurnOn",
        ON_OFF_PARAMETERS,
        "Turns on/opens/presses a device or entity. For locks, this performs a 'lock' action. "
        "Use for requests like 'turn on', 'activate', 'enable', or 'lock'.",
    ),
    ha_tool(
        "HassTurnOff",
        ON_OFF_PARAMETERS,
        "Turns off/closes a device or entity. For locks, this performs an 'unlock' action. "
        "Use for requests like 'turn off', 'deactivate', 'disable', or 'unlock'.",
    ),
    ha_tool("GetDateTime", {"type": "object", "properties": {}, "required": []}, "Provides the current date and time."),
    # A script exposed to Assist: its fields become the parameters, its description the tool's.
    ha_tool(
        "get_weather",
        {"type": "object", "properties": {"city": {"description": "City name", "type": "string"}}, "required": ["city"]},
        "Get the weather",
    ),
]


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


def parse_tool_args(arguments):
    """Like HA: `.items()` on the arguments (so they must be an object), empty values dropped."""
    return {k: v for k, v in arguments.items() if v is not None and v != ""}


async def ha_deltas(responses):
    """Like HA's _transform_stream: content, thinking and tool calls from every chunk."""
    async for response in responses:
        message = response["message"]
        delta = {}
        if (tool_calls := message.get("tool_calls")) is not None:
            delta["tool_calls"] = [(c["function"]["name"], parse_tool_args(c["function"]["arguments"])) for c in tool_calls]
        if (content := message.get("content")) is not None:
            delta["content"] = content
        if (thinking := message.get("thinking")) is not None:
            delta["thinking"] = thinking
        yield delta


async def one(response):
    yield response


async def turn(client, messages, tools, stream):
    """One request of HA's tool loop; returns the assistant's content and tool calls."""
    result = await client.chat(
        model=model,
        messages=list(messages),
        tools=tools,
        stream=stream,
        keep_alive="-1s",
        options={"num_ctx": 8192.0},
    )
    responses = []

    async def kept(source):
        async for response in source:
            responses.append(response)
            yield response

    deltas = [d async for d in ha_deltas(kept(result if stream else one(result)))]
    content = "".join(d.get("content", "") for d in deltas)
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    # HA itself ignores the final chunk; check it is Ollama's all the same.
    final = responses[-1]
    check_that(f"final chunk {'stream' if stream else 'whole'}", final.done and final.done_reason == "stop" and type(final.eval_count) is int and final.eval_count > 0, final)
    return content, calls, final


async def conversation(client, stream):
    label = "stream" if stream else "whole"
    history = [Message(role="system", content=SYSTEM), Message(role="user", content="What is the weather in Paris?")]
    content, calls, final = await turn(client, history, TOOLS, stream)
    # The whole prompt reached llama-server: instructions, tool preamble and the four schemas.
    check_that(f"{label} prompt of HA's size", 2500 < final.prompt_eval_count <= 4096, final.prompt_eval_count)
    check(f"{label} tool call", calls, [(said["tool_call"]["name"], said["tool_call"]["arguments"])])
    check(f"{label} tool call turn text", content, "")
    history.append(
        Message(
            role="assistant",
            content=content,
            thinking=None,
            tool_calls=[Message.ToolCall(function=Message.ToolCall.Function(name=n, arguments=a)) for n, a in calls],
        )
    )
    # HA's json_dumps is compact; the tool message has no tool_name and no tool_call_id.
    result = {"success": True, "result": {"weather": "sunny", "city": calls[0][1]["city"]}}
    history.append(Message(role="tool", content=json.dumps(result, separators=(",", ":"))))
    content, calls, _ = await turn(client, history, TOOLS, stream)
    check(f"{label} answer after tool", (content, calls), (said["after_tool"], []))


async def main():
    client = ollama.AsyncClient(host=host)

    async with asyncio.timeout(5):
        listed = await client.list()
    downloaded = {m["model"] for m in listed.get("models", [])}
    check("model picker sees the model", model in downloaded, expect == "listed")
    if model not in downloaded:
        pulled = await client.pull(model, insecure=False, stream=False)
        check("pull", pulled["status"], "success")
    else:
        check("no pull needed", model in downloaded, True)
    try:
        await client.pull("no-such-model", insecure=False, stream=False)
        check("pull of an unknown model fails", "no error", "an error")
    except ollama.ResponseError as err:
        check_that("pull of an unknown model fails", err.status_code >= 400 and "no-such-model" in err.error, (err.status_code, err.error))

    await conversation(client, stream=True)
    await conversation(client, stream=False)

    # No LLM API selected: tools=None, which the client sends as "tools": [].
    content, calls, _ = await turn(client, [Message(role="system", content=SYSTEM_NO_API), Message(role="user", content="Hi")], None, True)
    check("no tools answer", (content, calls), (said["text"], []))

    # The dev branch's coordinator polls ps() for its sensors.
    running = (await client.ps()).models
    check_that("ps sizes", running and all(isinstance(m.size, int) and isinstance(m.size_vram, int) for m in running), running)


asyncio.run(main())
print("all checks passed")
