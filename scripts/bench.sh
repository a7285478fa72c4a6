#!/usr/bin/env bash
# The benchmark suite, one command:
#
#   scripts/bench.sh             full run: about 5 minutes after the build
#   scripts/bench.sh --smoke     every workload a few requests only (under a minute after
#                                the build); exits non-zero if any request, log row or step
#                                fails, never because of a number (scripts/test.sh runs it)
#
# Options: --no-llama (skip the real llama-server workloads), --out DIR (default
# target/bench/<date>), --release / --debug (build profile; full runs default to release,
# --smoke to debug, which reuses the test build).
#
# This machine is shared and has 2 cores: run it 2-3 times and compare, e.g.
#   cargo bench --bench perf -- report --spread target/bench/<run1> target/bench/<run2> ...
#
# It builds ollabridge and the bench tool (benches/perf, a `harness = false` bench target),
# starts the mock OpenAI backend (`perf mock`), a bare forwarding proxy (`perf floor`, the
# least any proxy on ollabridge's crates costs here) and ollabridge as a separate process
# (`ollabridge --config ...`, so its CPU can be read from /proc), then for each workload
# sends the same requests through ollabridge (/api/chat) and straight to the backend
# (/v1/chat/completions), in alternating batches (`perf load`). Then the same against a real
# llama-server (scripts/build-llama-server.sh, scripts/tiny-models.sh), the log writer's
# rows/s (`perf writer`, on disk and on tmpfs) and the CPU the logging path costs per
# request (`perf logcost`). It prints one table (`perf report`) and keeps every result as
# JSON in the output directory, with the processes' logs.
#
# Everything listens on 127.0.0.1 only, every load is bounded in time and count, and every
# process started here is stopped (by its pid) on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SMOKE=0
LLAMA=1
OUT=""
PROFILE=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --no-llama) LLAMA=0 ;;
    --out) OUT="$2"; shift ;;
    --release) PROFILE=release ;;
    --debug) PROFILE=dev ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$PROFILE" ]; then
  if [ "$SMOKE" = 1 ]; then PROFILE=dev; else PROFILE=release; fi
fi
if [ -z "$OUT" ]; then
  OUT="$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)$([ "$SMOKE" = 1 ] && echo -smoke || true)"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# Every process started here, stopped by pid on exit.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "/dev/shm/ollabridge-bench-$$.db" "/dev/shm/ollabridge-bench-$$.db-wal" "/dev/shm/ollabridge-bench-$$.db-shm"
}
trap cleanup EXIT

FAILED=()
step() { # step NAME COMMAND...: runs it, notes a failure, carries on
  local name="$1"
  shift
  if ! "$@"; then
    echo "bench: $name failed" >&2
    FAILED+=("$name")
  fi
}

# --- build --------------------------------------------------------------------------------
echo "bench: building ($PROFILE profile)" >&2
cargo build --profile "$PROFILE" --locked --bin ollabridge --bench perf \
  --message-format=json-render-diagnostics > "$OUT/build.log"
PERF="$(grep -o '"executable":"[^"]*/perf-[0-9a-f]*"' "$OUT/build.log" | tail -n1 | sed 's/^"executable":"//; s/"$//')"
BRIDGE_BIN="$(grep -o '"executable":"[^"]*/ollabridge"' "$OUT/build.log" | tail -n1 | sed 's/^"executable":"//; s/"$//')"
[ -x "$PERF" ] && [ -x "$BRIDGE_BIN" ] || { echo "bench: build did not produce the binaries" >&2; exit 1; }

{
  echo "date: $(date -u +%FT%TZ)"
  echo "mode: $([ "$SMOKE" = 1 ] && echo smoke || echo full), profile $PROFILE"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
  echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"

# --- helpers --------------------------------------------------------------------------------
# wait_for FILE PATTERN SECONDS: until a line of FILE matches PATTERN
wait_for() {
  local file="$1" pattern="$2" deadline=$((SECONDS + $3))
  until grep -aq "$pattern" "$file" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "bench: timed out waiting for '$pattern' in $file" >&2
      tail -n 20 "$file" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

# start_bridge NAME ENDPOINT MAPPINGS_JSON [OLLABRIDGE_LOG] [QUEUE_CAPACITY]: ollabridge as its
# own process on a free port; sets BRIDGE_URL, ADMIN_URL (its metrics) and BRIDGE_PID.
# `max_concurrent: 0` (no limit) as the direct side and the floor proxy have: the default
# would queue requests at ollabridge beyond llama-server's slots, a different mechanism
# from the one measured beside it.
start_bridge() {
  local name="$1" endpoint="$2" mappings="$3" log="${4:-info}" queue="${5:-4096}"
  cat > "$OUT/$name.config.json" <<EOF
{
  "server": {"host": "127.0.0.1", "port": 0},
  "backend": {"type": "openai", "endpoint": "$endpoint", "timeout": 60, "max_concurrent": 0},
  "database": {"path": "$OUT/$name.db", "queue_capacity": $queue},
  "admin": {"host": "127.0.0.1", "port": 0},
  "models": {"mappings": $mappings}
}
EOF
  OLLABRIDGE_LOG="$log" "$BRIDGE_BIN" --config "$OUT/$name.config.json" > "$OUT/$name.log" 2>&1 &
  BRIDGE_PID=$!
  PIDS+=("$BRIDGE_PID")
  wait_for "$OUT/$name.log" "ollabridge listening" 20
  BRIDGE_URL="http://$(grep -a "ollabridge listening" "$OUT/$name.log" | grep -o '127\.0\.0\.1:[0-9]*' | tail -n1)"
  wait_for "$OUT/$name.log" "admin listening" 5
  ADMIN_URL="http://$(grep -a "admin listening" "$OUT/$name.log" | grep -o '127\.0\.0\.1:[0-9]*' | tail -n1)"
}

rss_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
# utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# rows NAME DB: the bridge's log rows and those with an error, after it stopped
check_rows() {
  local name="$1" db="$2" expected_min="$3"
  if command -v sqlite3 > /dev/null; then
    local rows errors
    rows="$(sqlite3 "$db" 'SELECT COUNT(*) FROM logs')"
    errors="$(sqlite3 "$db" 'SELECT COUNT(*) FROM logs WHERE error IS NOT NULL')"
    echo "bench: $name logged $rows rows, $errors with an error" >&2
    if [ "$rows" -lt "$expected_min" ] || [ "$errors" -ne 0 ]; then
      echo "bench: $name: expected at least $expected_min rows and no error" >&2
      return 1
    fi
  fi
}

if [ "$SMOKE" = 1 ]; then
  # Each workload once (one concurrency), a few requests: it proves the bench still runs.
  CONCURRENCY=(8)
  LOAD=(--rounds 1 --batch-requests 3 --batch-ms 10000 --warmup-requests 1 --warmup-ms 10000)
  WRITER=(--rows 500 --repeat 1)
  LOGCOST=(--iters 500 --piece-ms 20)
else
  CONCURRENCY=(1 8 64)
  LOAD=(--rounds 4 --batch-ms 1000 --warmup-ms 300)
  WRITER=(--rows 20000 --repeat 3)
  LOGCOST=(--iters 20000 --piece-ms 300)
fi

# --- mock backend ---------------------------------------------------------------------------
"$PERF" mock --port 0 --threads 1 > "$OUT/mock.out" 2> "$OUT/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_for "$OUT/mock.out" "^listening " 10
MOCK_URL="$(sed -n 's/^listening //p' "$OUT/mock.out")"
# The floor: a bare forwarding proxy on ollabridge's crates (`perf floor`), run on a few of
# the workloads below right after ollabridge, to tell this host's cost of any such proxy
# from ollabridge's own.
start_floor() { # start_floor NAME [BACKEND_URL, default the mock]: sets FLOOR_URL, FLOOR_PID
  "$PERF" floor --port 0 --backend "${2:-$MOCK_URL}" > "$OUT/$1.out" 2> "$OUT/$1.err" &
  FLOOR_PID=$!
  PIDS+=("$FLOOR_PID")
  wait_for "$OUT/$1.out" "^listening " 10
  FLOOR_URL="$(sed -n 's/^listening //p' "$OUT/$1.out")"
}
start_floor floor
start_bridge bridge-mock "$MOCK_URL" '{"mock": "mock", "mock-paced": "mock+delay=2000", "mock-paced20": "mock+delay=20000"}'
sleep 0.5
IDLE_RSS="$(rss_kb "$BRIDGE_PID" VmRSS)"
# Idle: the CPU it uses with nothing to do (utime + stime ticks over a few seconds).
IDLE_S=$([ "$SMOKE" = 1 ] && echo 1 || echo 5)
IDLE_BEFORE="$(cpu_ticks "$BRIDGE_PID")"
sleep "$IDLE_S"
IDLE_TICKS=$(($(cpu_ticks "$BRIDGE_PID") - IDLE_BEFORE))
echo "bench: mock at $MOCK_URL, ollabridge at $BRIDGE_URL (pid $BRIDGE_PID, idle RSS $IDLE_RSS KiB, idle CPU $IDLE_TICKS ticks in ${IDLE_S}s)" >&2

n=0
for shape in nonstream stream16 stream256; do
  case "$shape" in
    nonstream) SHAPE=(--chunks 16) ;;
    stream16) SHAPE=(--stream --chunks 16) ;;
    stream256) SHAPE=(--stream --chunks 256) ;;
  esac
  for c in "${CONCURRENCY[@]}"; do
    n=$((n + 1))
    name="$(printf '%02d' "$n")-mock-$shape-c$c"
    echo "bench: $name" >&2
    step "$name" "$PERF" load --through "$BRIDGE_URL" --direct "$MOCK_URL" --model mock \
      "${SHAPE[@]}" --concurrency "$c" "${LOAD[@]}" \
      --pid "$BRIDGE_PID" --admin "$ADMIN_URL" --backend-pid "$MOCK_PID" --name "mock-$shape" --json "$OUT/$name.json" > "$OUT/$name.txt"
    case "$shape-c$c" in
      nonstream-c1 | nonstream-c64 | stream16-c1 | stream256-c8)
        n=$((n + 1))
        name="$(printf '%02d' "$n")-floor-$shape-c$c"
        echo "bench: $name" >&2
        step "$name" "$PERF" load --through "$FLOOR_URL" --through-openai --direct "$MOCK_URL" --model mock \
          "${SHAPE[@]}" --concurrency "$c" "${LOAD[@]}" \
          --pid "$FLOOR_PID" --backend-pid "$MOCK_PID" --name "floor-$shape" --json "$OUT/$name.json" > "$OUT/$name.txt"
        ;;
    esac
  done
done
# Paced like a real model: 2 ms between tokens, so each chunk arrives on its own.
n=$((n + 1))
name="$(printf '%02d' "$n")-mock-stream16-paced2ms-c8"
echo "bench: $name" >&2
step "$name" "$PERF" load --through "$BRIDGE_URL" --direct "$MOCK_URL" --model mock-paced --backend-model 'mock+delay=2000' \
  --stream --chunks 16 --concurrency 8 "${LOAD[@]}" \
  --pid "$BRIDGE_PID" --admin "$ADMIN_URL" --backend-pid "$MOCK_PID" --name "mock-stream16-2ms" --json "$OUT/$name.json" > "$OUT/$name.txt"
# Open loop: a fixed arrival rate, whatever is in flight (scheduling lag reported apart).
if [ "$SMOKE" = 1 ]; then RATES=(50); else RATES=(1000); fi
for rate in "${RATES[@]}"; do
  n=$((n + 1))
  name="$(printf '%02d' "$n")-mock-stream16-r$rate"
  echo "bench: $name" >&2
  step "$name" "$PERF" load --through "$BRIDGE_URL" --direct "$MOCK_URL" --model mock \
    --stream --chunks 16 --rate "$rate" "${LOAD[@]}" \
    --pid "$BRIDGE_PID" --admin "$ADMIN_URL" --backend-pid "$MOCK_PID" --name "mock-stream16" --json "$OUT/$name.json" > "$OUT/$name.txt"
done
if [ "$SMOKE" = 1 ]; then RATES=(50); else RATES=(500 1000 2000); fi
for rate in "${RATES[@]}"; do
  n=$((n + 1))
  name="$(printf '%02d' "$n")-mock-nonstream-r$rate"
  echo "bench: $name" >&2
  step "$name" "$PERF" load --through "$BRIDGE_URL" --direct "$MOCK_URL" --model mock \
    --chunks 16 --rate "$rate" "${LOAD[@]}" \
    --pid "$BRIDGE_PID" --admin "$ADMIN_URL" --backend-pid "$MOCK_PID" --name "mock-nonstream" --json "$OUT/$name.json" > "$OUT/$name.txt"
done
# Paced like a chatty model: 64 chunks 20 ms apart, 128 streams at once (the gap between
# chunks is what a reader sees), then 512 streams at once (errors only).
if [ "$SMOKE" = 1 ]; then
  PACED=(--chunks 4 --concurrency 4 --rounds 1 --batch-requests 4 --warmup-requests 1)
  PACED512=(--chunks 4 --concurrency 8 --rounds 1 --batch-requests 8 --warmup-requests 1)
else
  PACED=(--chunks 64 --concurrency 128 --rounds 2 --batch-ms 3000 --warmup-ms 1500)
  PACED512=(--chunks 64 --concurrency 512 --rounds 1 --batch-ms 2500 --warmup-ms 1500)
fi
for shape in paced128 paced512; do
  n=$((n + 1))
  name="$(printf '%02d' "$n")-mock-stream-$shape"
  echo "bench: $name" >&2
  if [ "$shape" = paced128 ]; then SHAPE=("${PACED[@]}"); else SHAPE=("${PACED512[@]}"); fi
  step "$name" "$PERF" load --through "$BRIDGE_URL" --direct "$MOCK_URL" --model mock-paced20 --backend-model 'mock+delay=20000' \
    --stream "${SHAPE[@]}" --pid "$BRIDGE_PID" --admin "$ADMIN_URL" --backend-pid "$MOCK_PID" \
    --name "mock-stream-20ms" --json "$OUT/$name.json" > "$OUT/$name.txt"
done
AFTER_RSS="$(rss_kb "$BRIDGE_PID" VmRSS)"
PEAK_RSS="$(rss_kb "$BRIDGE_PID" VmHWM)"
printf '{"kind": "rss", "label": "mock backend", "idle_kb": %s, "after_kb": %s, "peak_kb": %s, "idle_cpu_ticks": %s, "idle_s": %s, "ticks_per_s": %s}\n' \
  "$IDLE_RSS" "$AFTER_RSS" "$PEAK_RSS" "$IDLE_TICKS" "$IDLE_S" "$(getconf CLK_TCK)" > "$OUT/39-rss.json"
kill "$BRIDGE_PID" && wait "$BRIDGE_PID" || true
step "bridge-mock log rows" check_rows bridge-mock "$OUT/bridge-mock.db" 1

# A slow upstream: every answer takes 1 s, 1000 requests a second, so ~1000 are in flight;
# on a fresh ollabridge, whose peak RSS is then this workload's.
start_bridge bridge-slow "$MOCK_URL" '{"mock-slow": "mock+ttft=1000000"}'
n=$((n + 1))
name="$(printf '%02d' "$n")-mock-nonstream-slow1s-r1000"
echo "bench: $name" >&2
if [ "$SMOKE" = 1 ]; then SLOW=(--rate 50 "${LOAD[@]}"); else SLOW=(--rate 1000 --rounds 2 --batch-ms 3000 --warmup-ms 300); fi
step "$name" "$PERF" load --through "$BRIDGE_URL" --direct "$MOCK_URL" --model mock-slow --backend-model 'mock+ttft=1000000' \
  --chunks 16 "${SLOW[@]}" --pid "$BRIDGE_PID" --admin "$ADMIN_URL" --backend-pid "$MOCK_PID" \
  --name "mock-nonstream-slow1s" --json "$OUT/$name.json" > "$OUT/$name.txt"
kill "$BRIDGE_PID" && wait "$BRIDGE_PID" || true
# The same through a fresh floor proxy: what its crates keep per request in flight.
kill "$FLOOR_PID" && wait "$FLOOR_PID" || true
start_floor floor-slow
sleep 0.5
FLOOR_IDLE_RSS="$(rss_kb "$FLOOR_PID" VmRSS)"
n=$((n + 1))
name="$(printf '%02d' "$n")-floor-nonstream-slow1s-r1000"
echo "bench: $name" >&2
step "$name" "$PERF" load --through "$FLOOR_URL" --through-openai --direct "$MOCK_URL" --model 'mock+ttft=1000000' \
  --chunks 16 "${SLOW[@]}" --pid "$FLOOR_PID" --backend-pid "$MOCK_PID" \
  --name "floor-nonstream-slow1s" --json "$OUT/$name.json" > "$OUT/$name.txt"
printf '{"kind": "rss", "process": "floor proxy", "label": "1 s upstream", "idle_kb": %s, "after_kb": %s, "peak_kb": %s}\n' \
  "$FLOOR_IDLE_RSS" "$(rss_kb "$FLOOR_PID" VmRSS)" "$(rss_kb "$FLOOR_PID" VmHWM)" > "$OUT/$(printf '%02d' "$n")-floor-rss.json"
kill "$FLOOR_PID" && wait "$FLOOR_PID" || true

# What the per-request log line (api/exchange/mod.rs `tracing::info!`, stdout to a file) costs end to
# end: two ollabridges alike but for that line, loaded in turn (line, quiet, line, quiet) with
# the non-streamed c8 workload; both have a queue large enough that neither drops log rows.
start_bridge bridge-ab-line "$MOCK_URL" '{"mock": "mock"}' info 1000000
LINE=("$BRIDGE_URL" "$ADMIN_URL" "$BRIDGE_PID")
start_bridge bridge-ab-quiet "$MOCK_URL" '{"mock": "mock"}' "info,ollabridge::api::exchange=warn" 1000000
QUIET=("$BRIDGE_URL" "$ADMIN_URL" "$BRIDGE_PID")
for round in 1 2; do
  for variant in line quiet; do
    if [ "$variant" = line ]; then AB=("${LINE[@]}"); else AB=("${QUIET[@]}"); fi
    n=$((n + 1))
    name="$(printf '%02d' "$n")-mock-nonstream-c8-$variant-$round"
    echo "bench: $name" >&2
    step "$name" "$PERF" load --through "${AB[0]}" --direct "$MOCK_URL" --model mock --chunks 16 --concurrency 8 \
      "${LOAD[@]}" --pid "${AB[2]}" --admin "${AB[1]}" --backend-pid "$MOCK_PID" --name "mock-nonstream-$variant" \
      --json "$OUT/$name.json" > "$OUT/$name.txt"
  done
  [ "$SMOKE" = 1 ] && break
done
kill "${LINE[2]}" "${QUIET[2]}" && wait "${LINE[2]}" "${QUIET[2]}" || true

# --- the real llama-server --------------------------------------------------------------------
if [ "$LLAMA" = 1 ]; then
  LLAMA_BIN="$(scripts/build-llama-server.sh)"
  MODELS="$(scripts/tiny-models.sh "$ROOT/target/tiny-models")"
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # One thread: llama.cpp's workers spin while waiting, which on 2 cores would take the
  # CPU ollabridge and the driver need (LLAMA_THREADS to change). An HTTP thread per
  # connection: llama-server serves each connection on one thread and keeps it while idle
  # for 5 s, so with its default six the driver's idle connections from a direct batch
  # could stall the next batch through ollabridge (once: 30 requests waited 5-15 s).
  "$LLAMA_BIN" -m "$MODELS/tiny-chat.gguf" --alias tiny-chat --host 127.0.0.1 --port "$PORT" \
    --jinja -c 16384 -np 4 -t "${LLAMA_THREADS:-1}" --threads-http 80 --no-webui > "$OUT/llama-server.log" 2>&1 &
  LLAMA_PID=$!
  PIDS+=("$LLAMA_PID")
  LLAMA_URL="http://127.0.0.1:$PORT"
  for _ in $(seq 1 300); do
    curl -sf "$LLAMA_URL/health" > /dev/null 2>&1 && break
    sleep 0.1
  done
  if curl -sf "$LLAMA_URL/health" > /dev/null 2>&1; then
    start_bridge bridge-llama "$LLAMA_URL" '{"tiny-chat": "tiny-chat"}'
    # The floor in front of llama-server too (1 client), for what any proxy adds to the
    # waits on a model that thinks: each is a wake-up of a sleeping process.
    start_floor floor-llama "$LLAMA_URL"
    for mode in stream nonstream; do
      if [ "$mode" = stream ]; then MODE=(--stream); else MODE=(); fi
      for c in 1 32; do
        n=$((n + 1))
        name="$(printf '%02d' "$n")-llama-$mode-c$c"
        echo "bench: $name" >&2
        step "$name" "$PERF" load --through "$BRIDGE_URL" --direct "$LLAMA_URL" --model tiny-chat \
          "${MODE[@]}" --concurrency "$c" "${LOAD[@]}" \
          --pid "$BRIDGE_PID" --admin "$ADMIN_URL" --backend-pid "$LLAMA_PID" --name "llama-$mode" --json "$OUT/$name.json" > "$OUT/$name.txt"
        if [ "$c" = 1 ]; then
          n=$((n + 1))
          name="$(printf '%02d' "$n")-floor-llama-$mode-c$c"
          echo "bench: $name" >&2
          step "$name" "$PERF" load --through "$FLOOR_URL" --through-openai --direct "$LLAMA_URL" --model tiny-chat \
            "${MODE[@]}" --concurrency "$c" "${LOAD[@]}" \
            --pid "$FLOOR_PID" --backend-pid "$LLAMA_PID" --name "floor-llama-$mode" --json "$OUT/$name.json" > "$OUT/$name.txt"
        fi
      done
    done
    kill "$BRIDGE_PID" && wait "$BRIDGE_PID" || true
    kill "$FLOOR_PID" && wait "$FLOOR_PID" || true
    step "bridge-llama log rows" check_rows bridge-llama "$OUT/bridge-llama.db" 1
  else
    echo "bench: llama-server did not become healthy (see $OUT/llama-server.log)" >&2
    FAILED+=("llama-server")
  fi
  kill "$LLAMA_PID" 2>/dev/null && wait "$LLAMA_PID" 2>/dev/null || true
fi

# --- the request log ------------------------------------------------------------------------
echo "bench: log writer" >&2
step "writer (disk)" "$PERF" writer --db "$OUT/writer.db" --label "disk, target/bench" "${WRITER[@]}" \
  --json "$OUT/40-writer-disk.json" > "$OUT/40-writer-disk.txt"
if [ -d /dev/shm ]; then
  step "writer (tmpfs)" "$PERF" writer --db "/dev/shm/ollabridge-bench-$$.db" --label "tmpfs, /dev/shm" \
    "${WRITER[@]}" --json "$OUT/41-writer-tmpfs.json" > "$OUT/41-writer-tmpfs.txt"
fi
echo "bench: logging cost" >&2
step "logcost" "$PERF" logcost --db "$OUT/logcost.db" --tracing-log "$OUT/logcost-tracing.log" --label disk \
  "${LOGCOST[@]}" --json "$OUT/50-logcost.json" > "$OUT/50-logcost.txt"

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

# --- report ----------------------------------------------------------------------------------
echo
cat "$OUT/machine.txt"
"$PERF" report "$OUT" || FAILED+=("report")
echo "results: $OUT"
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "bench: FAILED: ${FAILED[*]}" >&2
  exit 1
fi
