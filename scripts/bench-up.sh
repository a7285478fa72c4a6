#!/usr/bin/env bash
# Starts the real-backend bench by hand (demo, benchmarks): builds or reuses llama-server,
# generates or reuses the scripted tiny models, then runs llama-server in the foreground.
#
#   scripts/bench-up.sh [MODEL] [extra llama-server args...]
#
# MODEL is tiny-chat (default) or tiny-think (or a path to any .gguf). PORT (default 8080)
# picks the port. The served model is named after MODEL (--alias). The expected scripted
# outputs are in <models dir>/script.json. Embeddings are on (/v1/embeddings, mean pooling).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
MODEL="${1:-tiny-chat}"
[ "$#" -gt 0 ] && shift
PORT="${PORT:-8080}"

BIN="$("$HERE/build-llama-server.sh")"
if [[ "$MODEL" == *.gguf ]]; then
  GGUF="$MODEL"
  ALIAS="$(basename "$MODEL" .gguf)"
else
  DIR="$("$HERE/tiny-models.sh" "${TINY_MODELS_DIR:-$ROOT/target/tiny-models}")"
  GGUF="$DIR/$MODEL.gguf"
  ALIAS="$MODEL"
fi
[ -f "$GGUF" ] || { echo "bench-up: no model $GGUF (try tiny-chat or tiny-think)" >&2; exit 1; }

echo "bench-up: serving $ALIAS ($GGUF) on http://127.0.0.1:$PORT; Ctrl-C stops it" >&2
exec "$BIN" -m "$GGUF" --alias "$ALIAS" --host 127.0.0.1 --port "$PORT" \
  --jinja -c 16384 -np 4 --embeddings --pooling mean "$@"
