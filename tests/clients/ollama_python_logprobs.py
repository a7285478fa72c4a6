"""The official `ollama` Python client (0.6.x) asking ollabridge for log probabilities and
thinking levels: Ollama's newer request fields, read back through the client's own types.

Usage: python ollama_python_logprobs.py CHAT_HOST CHAT_MODEL THINK_HOST THINK_MODEL SCRIPT_JSON
CHAT_HOST is a bridge over the tiny-chat llama-server, THINK_HOST one over tiny-think;
SCRIPT_JSON says what the scripted models answer. Prints one line per check and exits
non-zero on the first mismatch.
"""

import json
import sys
from importlib.metadata import version

import ollama

chat_host, chat_model, think_host, think_model, script_path = sys.argv[1:6]
script = json.load(open(script_path))
said, thought = script["tiny-chat"], script["tiny-think"]
client = ollama.Client(host=chat_host)
think_client = ollama.Client(host=think_host)
print(f"# ollama-python {version('ollama')}")

HELLO = [{"role": "user", "content": "Hi there"}]
# The scripted text as tiny-chat's vocabulary cuts it.
TOKENS = ["Hello", " from", " the", " tiny", " scripted", " model", "."]


def fail(name, message):
    print(f"FAIL {name}: {message}")
    sys.exit(1)


def check(name, got, want):
    if got != want:
        fail(name, f"got {got!r}, want {want!r}")
    print(f"ok {name}")


def check_logprobs(name, logprobs, top):
    """Each token with a number, and `top` alternatives, the chosen token first."""
    check(f"{name} tokens", [l.token for l in logprobs], TOKENS)
    check(f"{name} spell the text", "".join(l.token for l in logprobs), said["text"])
    check(f"{name} alternatives", [len(l.top_logprobs or []) for l in logprobs], [top] * len(TOKENS))
    if top:
        check(f"{name} chosen first", [l.top_logprobs[0].token for l in logprobs], TOKENS)
        check(f"{name} likeliest first", all(l.top_logprobs[0].logprob >= l.top_logprobs[-1].logprob for l in logprobs), True)
    check(f"{name} numbers", all(isinstance(l.logprob, float) and l.logprob <= 0 for l in logprobs), True)


r = client.chat(model=chat_model, messages=HELLO, logprobs=True, top_logprobs=2, stream=False)
check("chat text", r.message.content, said["text"])
check_logprobs("chat logprobs", r.logprobs, 2)

parts = list(client.chat(model=chat_model, messages=HELLO, logprobs=True, top_logprobs=2, stream=True))
check("chat stream text", "".join(p.message.content for p in parts), said["text"])
check("chat stream a token a chunk", [[l.token for l in p.logprobs or []] for p in parts[:-1]], [[t] for t in TOKENS])
check_logprobs("chat stream logprobs", [l for p in parts for l in p.logprobs or []], 2)
check("chat stream the end has none", parts[-1].logprobs, None)

r = client.generate(model=chat_model, prompt="Once upon a time", raw=True, logprobs=True, stream=False)
check("generate raw text", r.response, said["completion"])
check_logprobs("generate raw logprobs", r.logprobs, 0)

r = client.chat(model=chat_model, messages=HELLO, stream=False)
check("not asked, none", r.logprobs, None)

for level in ["low", "medium", "high", "max"]:
    r = think_client.chat(model=think_model, messages=HELLO, think=level, stream=False)
    check(f"think {level}", ((r.message.thinking or "").strip(), r.message.content), (thought["thinking"], thought["answer"]))
try:
    think_client.chat(model=think_model, messages=HELLO, think="extreme")
    fail("think extreme", "was answered")
except ollama.ResponseError as err:
    check("think extreme refused", (err.status_code, '"extreme" (must be "high", "medium", "low", "max", true, or false)' in err.error), (400, True))

print("all checks passed")
