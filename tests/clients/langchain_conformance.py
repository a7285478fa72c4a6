"""LangChain's `ChatOllama` (langchain-ollama) against ollabridge.

Usage: python langchain_conformance.py CHAT_HOST CHAT_MODEL THINK_HOST THINK_MODEL SCRIPT_JSON
CHAT_HOST is a bridge over tiny-chat, THINK_HOST one over tiny-think. Prints one line per
check and exits non-zero on the first mismatch.
"""

import json
import sys
from importlib.metadata import version

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_ollama import ChatOllama

chat_host, chat_model, think_host, think_model, script_path = sys.argv[1:6]
script = json.load(open(script_path))
said, thought = script["tiny-chat"], script["tiny-think"]
print(f"# langchain-ollama {version('langchain-ollama')}, ollama-python {version('ollama')}")


def check(name, got, want):
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok {name}")


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city to get the weather for.
    """
    return "sunny"


# validate_model_on_init lists the models and looks for the name (with or without a tag).
llm = ChatOllama(model=chat_model, base_url=chat_host, validate_model_on_init=True)

answer = llm.invoke("Hi there")
check("invoke text", answer.content, said["text"])
check("invoke done_reason", answer.response_metadata.get("done_reason"), "stop")
usage = answer.usage_metadata or {}
check("invoke usage", all(type(usage.get(k)) is int and usage[k] > 0 for k in ("input_tokens", "output_tokens")), True)

check("stream text", "".join(chunk.content for chunk in llm.stream("Hi there")), said["text"])

question = HumanMessage("What is the weather in Paris?")
with_tools = llm.bind_tools([get_weather])
call = with_tools.invoke([question])
check("tool call", [(c["name"], c["args"]) for c in call.tool_calls], [(said["tool_call"]["name"], said["tool_call"]["arguments"])])
result = ToolMessage(json.dumps({"weather": get_weather("Paris")}), tool_call_id=call.tool_calls[0]["id"])
check("tool result answer", with_tools.invoke([question, call, result]).content, said["after_tool"])

thinker = ChatOllama(model=think_model, base_url=think_host, reasoning=True)
answer = thinker.invoke("Hi there")
check("reasoning content", answer.additional_kwargs.get("reasoning_content", "").strip(), thought["thinking"])
check("reasoning answer", answer.content, thought["answer"])
answer = ChatOllama(model=think_model, base_url=think_host, reasoning=False).invoke("Hi there")
check("reasoning off", (answer.content, "reasoning_content" in answer.additional_kwargs), (thought["text"], False))

print("all checks passed")
