#!/usr/bin/env bash
# The one command that runs every test (CI runs exactly this):
#   scripts/test.sh
# or one tier of them (extra arguments go to `cargo test`, e.g. a test name or `-- --nocapture`):
#   scripts/test.sh unit       src/** unit tests; needs nothing
#   scripts/test.sh mock       in-process ollabridge over mock backends; needs nothing
#                              (fault_disk_full's tmpfs test needs root)
#   scripts/test.sh llama      the real llama-server, scripted tiny models, official clients
#                              (cmake, g++, python3 venvs, npm; built and cached on first use)
#   scripts/test.sh browser    the dashboard in chromium, over llama-server
#   scripts/test.sh postgres   the PostgreSQL store on a throwaway cluster
# The tiers' test files are listed in .cargo/config.toml (`cargo test-<tier>` runs one
# without this script). `all` builds or reuses the llama-server bench and the scripted tiny
# models, then runs formatting and lint checks and the whole cargo test suite (every tier),
# then the benchmark suite's smoke mode, which only proves the bench still runs (its numbers
# decide nothing; a failed request, step or log row does).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TIER="${1:-all}"
[ "$#" -eq 0 ] || shift

# Every tests/*.rs must be in exactly one tier, or a new test file would run only in `all`.
check_tiers() {
  local listed files problem=0 name
  listed="$(grep -v '^[[:space:]]*#' .cargo/config.toml | grep -o '"--test=[A-Za-z0-9_]*"' | sed 's/^"--test=//; s/"$//' | sort)"
  files="$(for f in tests/*.rs; do basename "$f" .rs; done | sort)"
  for name in $(comm -23 <(echo "$files") <(echo "$listed" | sort -u)); do
    echo "test: tests/$name.rs is in no tier: add \"--test=$name\" to one test-<tier> alias in .cargo/config.toml" >&2
    problem=1
  done
  for name in $(echo "$listed" | uniq -d); do
    echo "test: tests/$name.rs is in more than one tier in .cargo/config.toml" >&2
    problem=1
  done
  for name in $(comm -13 <(echo "$files") <(echo "$listed" | sort -u)); do
    echo "test: .cargo/config.toml lists --test=$name, but tests/$name.rs does not exist" >&2
    problem=1
  done
  return "$problem"
}

# Each preparation keeps a value already in the environment.
prepare_llama() {
  OLLABRIDGE_LLAMA_SERVER="${OLLABRIDGE_LLAMA_SERVER:-$(scripts/build-llama-server.sh)}"
  OLLABRIDGE_TINY_MODELS="${OLLABRIDGE_TINY_MODELS:-$(scripts/tiny-models.sh "$ROOT/target/tiny-models")}"
  export OLLABRIDGE_LLAMA_SERVER OLLABRIDGE_TINY_MODELS
}

# The browser tests/dashboard.rs drives (Debian's chromium package).
prepare_chromium() {
  OLLABRIDGE_CHROMIUM="${OLLABRIDGE_CHROMIUM:-$(command -v chromium || true)}"
  [ -n "$OLLABRIDGE_CHROMIUM" ] || { echo "test: chromium is missing (apt-get install chromium)" >&2; exit 1; }
  export OLLABRIDGE_CHROMIUM
}

# PostgreSQL's initdb, pg_ctl and postgres (Debian's postgresql package) for the throwaway
# cluster tests/postgres_store.rs starts on loopback.
prepare_postgres() {
  OLLABRIDGE_PG_BIN="${OLLABRIDGE_PG_BIN:-$( (ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true) | sort -V | tail -n1)}"
  [ -x "$OLLABRIDGE_PG_BIN/initdb" ] || { echo "test: PostgreSQL is missing (apt-get install postgresql)" >&2; exit 1; }
  export OLLABRIDGE_PG_BIN
}

check_tiers

case "$TIER" in
  unit | mock)
    cargo "test-$TIER" --locked "$@"
    ;;
  llama)
    prepare_llama
    cargo test-llama --locked "$@"
    ;;
  browser)
    prepare_llama
    prepare_chromium
    cargo test-browser --locked "$@"
    ;;
  postgres)
    prepare_postgres
    cargo test-postgres --locked "$@"
    ;;
  all)
    [ "$#" -eq 0 ] || { echo "test: 'all' takes no further arguments" >&2; exit 2; }
    prepare_llama
    prepare_chromium
    prepare_postgres
    cargo fmt --all -- --check
    cargo clippy --all-targets --locked -- -D warnings
    # deploy/Dockerfile's build context builds (no Docker needed).
    scripts/check-docker-context.sh
    cargo test --all-targets --locked --no-fail-fast
    scripts/bench.sh --smoke
    ;;
  *)
    echo "usage: scripts/test.sh [all|unit|mock|llama|browser|postgres] [cargo test arguments]" >&2
    exit 2
    ;;
esac
