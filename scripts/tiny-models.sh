#!/usr/bin/env bash
# Generates the scripted tiny GGUF models (scripts/tiny_models.py) into ${1:-target/tiny-models},
# in a Python venv under ${OLLABRIDGE_CACHE:-~/.cache/ollabridge}/venv built from
# scripts/requirements-bench.txt (reinstalled when that file changes). Regenerates only when the
# output is missing or older than tiny_models.py. Prints the output directory on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${OLLABRIDGE_CACHE:-$HOME/.cache/ollabridge}"
VENV="$CACHE/venv"
REQS="$HERE/requirements-bench.txt"
GEN="$HERE/tiny_models.py"
OUT="${1:-target/tiny-models}"

# The venv, keyed by the requirements file's content.
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
stamp="$VENV/.requirements-bench.sha256"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  command -v python3 >/dev/null || { echo "tiny-models: python3 is missing" >&2; exit 1; }
  echo "tiny-models: installing $REQS into $VENV" >&2
  mkdir -p "$CACHE"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" >&2
  echo "$want" > "$stamp"
fi

# The models, when missing or older than the generator.
fresh=1
for f in tiny-chat.gguf tiny-think.gguf script.json; do
  if [ ! -f "$OUT/$f" ] || [ "$GEN" -nt "$OUT/$f" ]; then fresh=0; fi
done
if [ "$fresh" = 0 ]; then
  echo "tiny-models: generating into $OUT" >&2
  "$VENV/bin/python" "$GEN" "$OUT" >&2
else
  echo "tiny-models: up to date in $OUT" >&2
fi
(cd "$OUT" && pwd)
