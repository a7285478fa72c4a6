#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the sources vendored in the PyPI sdist of
# llama-cpp-python (the only registry that carries them), and caches the binary
# under ~/.cache/ollabridge/ keyed by version. Prints the binary's path on stdout.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${OLLABRIDGE_CACHE:-$HOME/.cache/ollabridge}"
DEST="$CACHE/llama-server-$VERSION"
BIN="$DEST/bin/llama-server"

if [ -x "$BIN" ]; then
  echo "llama-server $VERSION: cached at $BIN" >&2
  echo "$BIN"
  exit 0
fi

# Test binaries that need llama-server run this at the same time when `cargo test` runs
# without OLLABRIDGE_LLAMA_SERVER: one builds, the others wait and take its binary.
mkdir -p "$CACHE"
exec 9>"$CACHE/.llama-server-$VERSION.lock"
flock 9
if [ -x "$BIN" ]; then
  echo "llama-server $VERSION: built meanwhile at $BIN" >&2
  echo "$BIN"
  exit 0
fi

for tool in cmake c++ python3; do
  command -v "$tool" >/dev/null || { echo "build-llama-server: '$tool' is missing (apt-get install cmake g++)" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "llama-server $VERSION: downloading sdist from PyPI" >&2
python3 -m pip download --quiet --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION" >&2
tar -xzf "$WORK"/llama_cpp_python-*.tar.gz -C "$WORK"
SRC="$(echo "$WORK"/llama_cpp_python-*/vendor/llama.cpp)"

echo "llama-server $VERSION: building (about 10 minutes on 2 cores)" >&2
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >&2
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >&2

mkdir -p "$DEST.tmp/bin" "$DEST.tmp/templates"
cp "$WORK/build/bin/llama-server" "$DEST.tmp/bin/"
# The Qwen chat templates the tiny models are derived from ship in the same sdist.
cp "$SRC"/models/templates/*.jinja "$DEST.tmp/templates/" 2>/dev/null || true
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "llama-server $VERSION: built at $BIN" >&2
echo "$BIN"
