#!/usr/bin/env bash
# Builds (cargo check) exactly the files deploy/Dockerfile copies into its build stage,
# so a file the build needs but the image never gets (web/ once) fails CI, not a user's
# `docker build`. No Docker needed: the COPY lines are read and replayed into a temp dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A fixed place, so cargo reuses what it checked last time.
CONTEXT="$ROOT/target/docker-context/src"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT"

# The build stage's COPY lines: every word but the last is a source, relative to the
# repo (the build context); the last is the destination under WORKDIR /src.
copies=0
while read -r -a words; do
  sources=("${words[@]:1:${#words[@]}-2}")
  dest="${words[-1]}"
  mkdir -p "$CONTEXT/$dest"
  for src in "${sources[@]}"; do
    [ -e "$ROOT/$src" ] || { echo "check-docker-context: deploy/Dockerfile copies '$src', which does not exist" >&2; exit 1; }
    if [ -d "$ROOT/$src" ]; then
      mkdir -p "$CONTEXT/$dest"
      cp -r "$ROOT/$src/." "$CONTEXT/$dest/"
    else
      cp "$ROOT/$src" "$CONTEXT/$dest/"
    fi
    copies=$((copies + 1))
  done
done < <(awk '/^FROM /{stage++} stage==1 && /^COPY /' "$ROOT/deploy/Dockerfile")
[ "$copies" -gt 0 ] || { echo "check-docker-context: no COPY lines found in deploy/Dockerfile's build stage" >&2; exit 1; }

# The repo's own target dir: the dependencies `cargo clippy` checked are reused.
CARGO_TARGET_DIR="$ROOT/target" cargo check --locked --quiet --manifest-path "$CONTEXT/Cargo.toml"
echo "check-docker-context: the Dockerfile's build context builds ($copies sources copied)" >&2
