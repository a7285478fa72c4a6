#!/usr/bin/env bash
# The one command that runs every test (CI runs exactly this):
#   scripts/test.sh
# It builds or reuses the llama-server bench and the scripted tiny models, then runs
# formatting and lint checks and the whole cargo test suite (unit, mock-backend,
# real-llama-server end to end, official Python client, the dashboard in chromium, the
# PostgreSQL store), then the benchmark suite's smoke mode, which only proves the bench
# still runs (its numbers decide nothing; a failed request, step or log row does).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OLLABRIDGE_LLAMA_SERVER="$(scripts/build-llama-server.sh)"
OLLABRIDGE_TINY_MODELS="$(scripts/tiny-models.sh "$ROOT/target/tiny-models")"
# The browser tests/dashboard.rs drives (Debian's chromium package).
OLLABRIDGE_CHROMIUM="${OLLABRIDGE_CHROMIUM:-$(command -v chromium || true)}"
[ -n "$OLLABRIDGE_CHROMIUM" ] || { echo "test: chromium is missing (apt-get install chromium)" >&2; exit 1; }
# PostgreSQL's initdb, pg_ctl and postgres (Debian's postgresql package) for the throwaway
# cluster tests/postgres_store.rs starts on loopback.
OLLABRIDGE_PG_BIN="${OLLABRIDGE_PG_BIN:-$( (ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true) | sort -V | tail -n1)}"
[ -x "$OLLABRIDGE_PG_BIN/initdb" ] || { echo "test: PostgreSQL is missing (apt-get install postgresql)" >&2; exit 1; }
export OLLABRIDGE_LLAMA_SERVER OLLABRIDGE_TINY_MODELS OLLABRIDGE_CHROMIUM OLLABRIDGE_PG_BIN

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# deploy/Dockerfile's build context builds (no Docker needed).
scripts/check-docker-context.sh
cargo test --all-targets --locked --no-fail-fast
scripts/bench.sh --smoke
