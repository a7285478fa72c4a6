#!/usr/bin/env bash
# Prepares the real client libraries tests/real_clients.rs drives, and prints where they are:
#   OLLAMA_051_PYTHON=<venv>/bin/python   ollama==0.5.1 (Home Assistant's pin)
#   LANGCHAIN_PYTHON=<venv>/bin/python    ollama==0.6.3 + langchain-ollama
#   OPENAI_PYTHON=<venv>/bin/python       openai (the official client, for the /v1 routes)
#   ANTHROPIC_PYTHON=<venv>/bin/python    anthropic (the official SDK, for /v1/messages)
#   NODE=<node binary>
#   CLAUDE_CODE_DIR=tests/clients/claude-code   the Claude Code CLI (node_modules/.bin/claude)
#   JS_DIR=tests/clients/js               with node_modules from its package-lock.json
#   DASHBOARD_DIR=tests/dashboard         the same for the dashboard test (playwright-core, uplot, ollama)
# The venvs live under ${OLLABRIDGE_CACHE:-~/.cache/ollabridge}/, one directory per content
# hash of their requirements file (tests/clients/requirements-*.txt), so a changed file
# builds a new venv and an unchanged one is reused. node_modules is reinstalled (npm ci)
# when package.json or package-lock.json change. Idempotent; safe to run concurrently.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${OLLABRIDGE_CACHE:-$HOME/.cache/ollabridge}"
CLIENTS="$ROOT/tests/clients"
mkdir -p "$CACHE"

# One preparer at a time (test binaries and scripts may start together).
exec 9>"$CACHE/client-envs.lock"
flock 9

log() { echo "client-envs: $*" >&2; }

# venv NAME REQUIREMENTS -> prints the venv's python
venv() {
  local name="$1" reqs="$2"
  local hash dir
  hash="$(sha256sum "$reqs" | cut -c1-16)"
  dir="$CACHE/clients-$name-$hash"
  if [ ! -f "$dir/.ready" ]; then
    command -v python3 >/dev/null || { log "python3 is missing"; exit 1; }
    log "installing $reqs into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir" >&2
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs" >&2
    touch "$dir/.ready"
    # Venvs built from older versions of the same file.
    for old in "$CACHE/clients-$name-"*; do
      [ "$old" = "$dir" ] || rm -rf "$old"
    done
  fi
  echo "$dir/bin/python"
}

py051="$(venv ollama-0.5.1 "$CLIENTS/requirements-ollama-0.5.1.txt")"
pylc="$(venv langchain "$CLIENTS/requirements-langchain.txt")"
pyoa="$(venv openai "$CLIENTS/requirements-openai.txt")"
pyan="$(venv anthropic "$CLIENTS/requirements-anthropic.txt")"

# npm packages, pinned by the committed lock files.
command -v node >/dev/null || { log "node is missing (Node.js 20 or newer is needed)"; exit 1; }
command -v npm >/dev/null || { log "npm is missing"; exit 1; }

# npm_ci DIR: node_modules from DIR's package-lock.json, reinstalled when it changes.
npm_ci() {
  local dir="$1" want stamp
  want="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1) $(node --version)"
  stamp="$dir/node_modules/.ollabridge-stamp"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --prefer-offline --cache "$CACHE/npm" --loglevel=error >&2)
    echo "$want" > "$stamp"
  fi
}

# The ollama npm package.
JS="$CLIENTS/js"
npm_ci "$JS"
# The dashboard test: playwright-core (drives Debian's chromium, downloads no browser),
# uplot (to check web/vendor against) and ollama.
DASHBOARD="$ROOT/tests/dashboard"
npm_ci "$DASHBOARD"
# The Claude Code CLI (its native binary comes as an optional dependency per platform).
CLAUDE_CODE="$CLIENTS/claude-code"
npm_ci "$CLAUDE_CODE"

echo "OLLAMA_051_PYTHON=$py051"
echo "LANGCHAIN_PYTHON=$pylc"
echo "OPENAI_PYTHON=$pyoa"
echo "ANTHROPIC_PYTHON=$pyan"
echo "NODE=$(command -v node)"
echo "JS_DIR=$JS"
echo "DASHBOARD_DIR=$DASHBOARD"
echo "CLAUDE_CODE_DIR=$CLAUDE_CODE"
