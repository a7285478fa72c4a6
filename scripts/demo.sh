#!/usr/bin/env bash
# A running demo in one command: the llama-server bench with the scripted tiny model,
# and ollabridge in front of it on http://127.0.0.1:11434. Ctrl-C stops both.
#   scripts/demo.sh            # then, in another terminal:
#   curl http://127.0.0.1:11434/api/chat -d '{"model":"tiny-chat","messages":[{"role":"user","content":"Hi"}]}'
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LLAMA_PORT="${LLAMA_PORT:-8080}"
PORT="${PORT:-11434}"
DEMO="$ROOT/target/demo"
mkdir -p "$DEMO"

cargo build --quiet
BIN="$(scripts/build-llama-server.sh)"
MODELS="$(scripts/tiny-models.sh "$ROOT/target/tiny-models")"

cat > "$DEMO/config.json" <<JSON
{
  "server": { "host": "127.0.0.1", "port": $PORT },
  "backend": { "type": "openai", "endpoint": "http://127.0.0.1:$LLAMA_PORT" },
  "database": { "path": "$DEMO/ollabridge.db" },
  "models": { "default": "tiny-chat", "mappings": { "tiny-chat": "tiny-chat", "llama3.2": "tiny-chat" } }
}
JSON

"$BIN" -m "$MODELS/tiny-chat.gguf" --alias tiny-chat --host 127.0.0.1 --port "$LLAMA_PORT" \
  --jinja -c 16384 -np 4 --embeddings --pooling mean --no-webui >"$DEMO/llama-server.log" 2>&1 &
LLAMA_PID=$!
trap 'kill $LLAMA_PID 2>/dev/null; wait $LLAMA_PID 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$LLAMA_PORT/health" >/dev/null && break
  sleep 0.1
done

cat >&2 <<TXT

ollabridge demo: llama-server (tiny scripted model) on :$LLAMA_PORT, ollabridge on :$PORT
  curl http://127.0.0.1:$PORT/api/chat -d '{"model":"tiny-chat","messages":[{"role":"user","content":"Hi"}]}'
  curl http://127.0.0.1:$PORT/api/tags
  sqlite3 $DEMO/ollabridge.db "SELECT model, AVG(latency_ms), COUNT(*) FROM logs WHERE error IS NULL GROUP BY model"
Ctrl-C stops both.

TXT
"$ROOT/target/debug/ollabridge" --config "$DEMO/config.json"
