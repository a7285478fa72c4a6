#!/usr/bin/env python3
"""Generates scripted tiny GGUF chat models for the real-backend test bench.

Usage: python scripts/tiny_models.py OUTDIR

Writes OUTDIR/tiny-chat.gguf, OUTDIR/tiny-think.gguf and OUTDIR/script.json
(the expected outputs, for tests to read). Output is byte-for-byte deterministic.

How the models work: a "llama" architecture with one block whose attention and
feed-forward weights are all zero (norms one), so the residual stream at the last
position is just that token's embedding, and the model is a bigram table:
  logits = output @ rmsnorm(token_embd[last_token]).
Every output row is a seeded random unit vector times LOGIT_SCALE, and each
token's embedding is the unit vector of the row of its designed successor, so
the successor wins by a wide margin (checked below); greedy and sampled decoding
alike follow fixed chains. Every chain step is its own token id, so the bigram
never branches, and each chain ends with <|im_end|> (EOS).

The chat templates are Qwen2.5's and Qwen3's from llama.cpp's models/templates,
changed only in the generation prompt: after '<|im_start|>assistant\\n' they emit
a CONTROL marker token chosen by the situation (last message is a tool result,
tools offered, thinking disabled, otherwise), and that marker, being the last
prompt token, picks the chain. Everything else in the templates is verbatim, so
llama-server's differential template analysis still finds Hermes-style
<tool_call> JSON tool calls (both) and <think> reasoning (Qwen3), and returns
real `tool_calls` and `reasoning_content`.
"""
import hashlib
import json
import os
import re
import sys

import gguf
import numpy as np

# --------------------------------------------------------------------------
# The scripted outputs (also written to OUTDIR/script.json).
# --------------------------------------------------------------------------
TEXT = "Hello from the tiny scripted model."        # tiny-chat, plain chat turn
TOOL_NAME = "get_weather"                           # when tools are offered
TOOL_ARGUMENTS = {"city": "Paris"}
AFTER_TOOL = "It is sunny in Paris today."          # when the last message is a tool result
THINKING = "The user greets me, so I greet back."   # tiny-think: reasoning_content
ANSWER = "Hello from the tiny thinking model."      # tiny-think: content (with or without thinking)

# What the model itself emits (before llama-server parses it), Qwen/Hermes style.
RAW_TOOL_CALL = ("<tool_call>\n"
                 + json.dumps({"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS})
                 + "\n</tool_call>")
RAW_THINK = "<think>\n" + THINKING + "\n</think>\n\n"  # followed by ANSWER

# Marker tokens the templates put at the end of the generation prompt.
MARK_TEXT = "<|tiny_text|>"
MARK_TOOL_CALL = "<|tiny_tool_call|>"
MARK_AFTER_TOOL = "<|tiny_after_tool|>"
MARK_THINK = "<|tiny_think|>"
MARK_ANSWER = "<|tiny_answer|>"

# --------------------------------------------------------------------------
# Model shape.
# --------------------------------------------------------------------------
N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 32768
LOGIT_SCALE = 12.0
MIN_LOGIT_GAP = 30.0   # successor logit minus best other logit, checked for every token
SEED = 20261123

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
UNK_ID, BOS_ID, EOS_S_ID, IM_START_ID, IM_END_ID = range(len(SPECIALS))
EOS_ID = IM_END_ID

TT = gguf.TokenType
# A tag is emitted as one USER_DEFINED token; text is cut into word-sized NORMAL tokens.
PIECE_RE = re.compile(r"<[^<>\s]+>|\s*\w+|\s*[^\w\s<]+|\s+")


def is_tag(s):
    return s.startswith("<")


class Model:
    """A vocabulary plus the successor of each token."""

    def __init__(self, markers):
        self.pieces = []
        self.types = []
        self.ids = {}
        self.succ = {}
        for tok in SPECIALS:
            self._add(tok, TT.UNKNOWN if tok == "<unk>" else TT.CONTROL)
        for tok in markers:
            self._add(tok, TT.CONTROL)
        for b in range(256):
            self._add(f"<0x{b:02X}>", TT.BYTE)

    @staticmethod
    def _stored(text):
        return text if is_tag(text) else text.replace(" ", "\u2581")

    def _add(self, piece, ttype):
        assert piece not in self.ids, f"duplicate token {piece!r}"
        self.ids[piece] = len(self.pieces)
        self.pieces.append(piece)
        self.types.append(int(ttype))
        return self.ids[piece]

    def _taken(self, text):
        return self._stored(text) in self.ids

    def _split(self, text):
        """Cuts text into pieces that are not yet in the vocabulary (so that every
        chain step is its own token): a repeated word is glued to its neighbour."""
        parts = PIECE_RE.findall(text)
        assert "".join(parts) == text, text
        out = []
        i = 0
        while i < len(parts):
            cur = parts[i]
            i += 1
            if is_tag(cur):
                assert not self._taken(cur) and cur not in out, f"tag {cur!r} used twice"
                out.append(cur)
                continue
            while self._taken(cur) or cur in out:
                if i < len(parts) and not is_tag(parts[i]):
                    cur += parts[i]
                    i += 1
                elif out and not is_tag(out[-1]):
                    cur = out.pop() + cur
                else:
                    raise ValueError(f"cannot make {cur!r} unique in {text!r}")
            out.append(cur)
        return out

    def _link(self, a, b):
        assert self.succ.get(a, b) == b, f"token {self.pieces[a]!r} would branch"
        self.succ[a] = b

    def tokens(self, text):
        """New tokens spelling text, linked one after the other."""
        ids = [self._add(self._stored(p), TT.USER_DEFINED if is_tag(p) else TT.NORMAL)
               for p in self._split(text)]
        for a, b in zip(ids, ids[1:]):
            self._link(a, b)
        return ids

    def chain(self, marker, *segments):
        """marker -> segments... -> <|im_end|>; segments are token lists."""
        ids = [t for seg in segments for t in seg]
        self._link(self.ids[marker], ids[0])
        for a, b in zip(ids, ids[1:]):
            self._link(a, b)
        self._link(ids[-1], EOS_ID)
        return ids

    def finish(self, default_first):
        """Any token without a designed successor (bytes, specials, unused markers)
        leads into the default chain, so a raw completion yields that text."""
        for t in range(len(self.pieces)):
            self.succ.setdefault(t, default_first)


def build_chat():
    m = Model([MARK_TEXT, MARK_TOOL_CALL, MARK_AFTER_TOOL])
    text = m.chain(MARK_TEXT, m.tokens(TEXT))
    m.chain(MARK_TOOL_CALL, m.tokens(RAW_TOOL_CALL))
    m.chain(MARK_AFTER_TOOL, m.tokens(AFTER_TOOL))
    m.finish(text[0])
    return m, chat_template(QWEN25_TEMPLATE, QWEN25_SHA256, QWEN25_GEN_PROMPT, QWEN25_GEN_PROMPT_NEW)


def build_think():
    m = Model([MARK_THINK, MARK_ANSWER, MARK_TOOL_CALL, MARK_AFTER_TOOL])
    answer = m.tokens(ANSWER)
    m.chain(MARK_ANSWER, answer)
    m.chain(MARK_THINK, m.tokens(RAW_THINK), answer)
    m.chain(MARK_TOOL_CALL, m.tokens(RAW_TOOL_CALL))
    m.chain(MARK_AFTER_TOOL, m.tokens(AFTER_TOOL))
    m.finish(answer[0])
    return m, chat_template(QWEN3_TEMPLATE, QWEN3_SHA256, QWEN3_GEN_PROMPT, QWEN3_GEN_PROMPT_NEW)


def chat_template(src, sha, old, new):
    assert hashlib.sha256(src.encode()).hexdigest() == sha, "embedded upstream template changed"
    assert src.count(old) == 1, "generation prompt block not found"
    return src.replace(old, new)


def rms_norm(x, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def weights(m, seed):
    n_vocab = len(m.pieces)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n_vocab, N_EMBD))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    output = (u * LOGIT_SCALE).astype(np.float32)
    succ = np.array([m.succ[t] for t in range(n_vocab)])
    token_embd = u[succ].astype(np.float32)

    # Check the bigram: every token's successor wins by at least MIN_LOGIT_GAP.
    logits = rms_norm(token_embd.astype(np.float64)) @ output.astype(np.float64).T
    assert (logits.argmax(axis=1) == succ).all()
    others = logits.copy()
    others[np.arange(n_vocab), succ] = -np.inf
    gap = float((logits[np.arange(n_vocab), succ] - others.max(axis=1)).min())
    assert gap >= MIN_LOGIT_GAP, f"logit gap {gap:.1f} too small; change SEED"
    return token_embd, output, gap


def write_gguf(path, name, m, template):
    token_embd, output, gap = weights(m, SEED)
    n_vocab = len(m.pieces)
    head_dim = N_EMBD // N_HEAD
    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    ones = lambda *shape: np.ones(shape, dtype=np.float32)    # noqa: E731

    tmp = path + ".tmp"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)

    w.add_tokenizer_model("llama")
    w.add_token_list(m.pieces)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(m.types)
    w.add_unk_token_id(UNK_ID)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(template)

    w.add_tensor("token_embd.weight", token_embd)
    w.add_tensor("output_norm.weight", ones(N_EMBD))
    w.add_tensor("output.weight", output)
    w.add_tensor("blk.0.attn_norm.weight", ones(N_EMBD))
    w.add_tensor("blk.0.attn_q.weight", zeros(N_EMBD, N_EMBD))
    w.add_tensor("blk.0.attn_k.weight", zeros(N_HEAD * head_dim, N_EMBD))
    w.add_tensor("blk.0.attn_v.weight", zeros(N_HEAD * head_dim, N_EMBD))
    w.add_tensor("blk.0.attn_output.weight", zeros(N_EMBD, N_EMBD))
    w.add_tensor("blk.0.ffn_norm.weight", ones(N_EMBD))
    w.add_tensor("blk.0.ffn_gate.weight", zeros(N_FF, N_EMBD))
    w.add_tensor("blk.0.ffn_up.weight", zeros(N_FF, N_EMBD))
    w.add_tensor("blk.0.ffn_down.weight", zeros(N_EMBD, N_FF))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return n_vocab, gap


def script():
    tool_call = {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}
    return {
        "tiny-chat": {
            "file": "tiny-chat.gguf",
            "text": TEXT,
            "tool_call": tool_call,
            "after_tool": AFTER_TOOL,
            "thinking": None,
            "answer": None,
            "completion": TEXT,
            "raw": {"text": TEXT, "tool_call": RAW_TOOL_CALL, "after_tool": AFTER_TOOL},
        },
        "tiny-think": {
            "file": "tiny-think.gguf",
            "text": ANSWER,
            "tool_call": tool_call,
            "after_tool": AFTER_TOOL,
            "thinking": THINKING,
            "answer": ANSWER,
            "completion": ANSWER,
            "raw": {"think": RAW_THINK + ANSWER, "text": ANSWER,
                    "tool_call": RAW_TOOL_CALL, "after_tool": AFTER_TOOL},
        },
    }


def main(argv):
    if len(argv) != 2:
        print("usage: tiny_models.py OUTDIR", file=sys.stderr)
        return 2
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name, build in (("tiny-chat", build_chat), ("tiny-think", build_think)):
        m, template = build()
        n_vocab, gap = write_gguf(os.path.join(outdir, name + ".gguf"), name, m, template)
        print(f"tiny_models: {name}.gguf: {n_vocab} tokens, min logit gap {gap:.1f}", file=sys.stderr)
    tmp = os.path.join(outdir, "script.json.tmp")
    with open(tmp, "w") as f:
        json.dump(script(), f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, os.path.join(outdir, "script.json"))
    return 0


# --------------------------------------------------------------------------
# Chat templates: verbatim from llama.cpp models/templates (as shipped in the
# llama-cpp-python 0.3.36 sdist); only the generation prompt block is replaced.
# --------------------------------------------------------------------------
QWEN25_SHA256 = "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f"
QWEN25_GEN_PROMPT = r"""{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
QWEN25_GEN_PROMPT_NEW = r"""{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if messages and messages[-1].role == 'tool' %}
        {{- '""" + MARK_AFTER_TOOL + r"""' }}
    {%- elif tools %}
        {{- '""" + MARK_TOOL_CALL + r"""' }}
    {%- else %}
        {{- '""" + MARK_TEXT + r"""' }}
    {%- endif %}
{%- endif %}
"""

QWEN3_SHA256 = "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5"
QWEN3_GEN_PROMPT = r"""{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""
# With thinking disabled the real template pre-fills an empty <think></think>;
# here the marker must be the last prompt token and must precede any <think>
# (llama-server cuts the generation prompt at the reasoning start tag, and text
# after it would be parsed as content), so the answer chain starts directly.
QWEN3_GEN_PROMPT_NEW = r"""{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if messages and messages[-1].role == 'tool' %}
        {{- '""" + MARK_AFTER_TOOL + r"""' }}
    {%- elif tools %}
        {{- '""" + MARK_TOOL_CALL + r"""' }}
    {%- elif enable_thinking is defined and enable_thinking is false %}
        {{- '""" + MARK_ANSWER + r"""' }}
    {%- else %}
        {{- '""" + MARK_THINK + r"""' }}
    {%- endif %}
{%- endif %}"""

QWEN25_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

QWEN3_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}'''

if __name__ == "__main__":
    sys.exit(main(sys.argv))
