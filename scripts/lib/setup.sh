# Shared setup steps for scripts/*.sh: install what a fresh machine lacks, by package name.

# Debian's dataset-fashion-mnist: the real benchmark set (gzip IDX files under /usr/share/datasets).
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
ensure_fashion_mnist() {
  [ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ] && return 0
  command -v apt-get >/dev/null || return 1
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing dataset-fashion-mnist (Debian package)..." >&2
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || return 1
  [ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]
}

# Azurite (npm, pinned in tools/azurite/package-lock.json): the Azure Storage emulator the contract tests run against.
AZURITE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/azurite"
AZURITE_PID=""
AZURITE_DATA=""
AZURITE_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

ensure_azurite() {
  if [ "$("$AZURITE_DIR/node_modules/.bin/azurite" --version 2>/dev/null)" = "3.37.0" ]; then return 0; fi
  command -v npm >/dev/null || { echo "npm is not installed: cannot install Azurite" >&2; return 1; }
  echo "installing Azurite (npm ci in tools/azurite)..." >&2
  (cd "$AZURITE_DIR" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1) || return 1
  [ -x "$AZURITE_DIR/node_modules/.bin/azurite" ]
}

# Starts blob (10000) + queue (10001) on loopback with fresh storage; exports SQUASH_TEST_AZURITE.
# AZURITE_BLOB_PORT / AZURITE_QUEUE_PORT move it, so two test runs can share a machine.
start_azurite() {
  local blob=${AZURITE_BLOB_PORT:-10000} queue=${AZURITE_QUEUE_PORT:-10001}
  AZURITE_DATA=$(mktemp -d)
  # --disableTelemetry: without it Azurite dials the cloud metadata endpoint and hangs on SIGTERM.
  "$AZURITE_DIR/node_modules/.bin/azurite" --silent --disableTelemetry --skipApiVersionCheck \
    --location "$AZURITE_DATA" --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 \
    --blobPort "$blob" --queuePort "$queue" --tablePort $((queue + 1)) \
    >"$AZURITE_DATA.log" 2>&1 &
  AZURITE_PID=$!
  local i
  for i in $(seq 1 300); do
    if (echo >/dev/tcp/127.0.0.1/$blob) 2>/dev/null && (echo >/dev/tcp/127.0.0.1/$queue) 2>/dev/null; then
      export SQUASH_TEST_AZURITE="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZURITE_ACCOUNT_KEY;BlobEndpoint=http://127.0.0.1:$blob/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$queue/devstoreaccount1;"
      return 0
    fi
    kill -0 "$AZURITE_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "Azurite did not open ports $blob/$queue (log: $AZURITE_DATA.log)" >&2
  cat "$AZURITE_DATA.log" >&2 || true
  stop_azurite
  return 1
}

stop_azurite() {
  if [ -n "$AZURITE_PID" ]; then
    kill "$AZURITE_PID" 2>/dev/null && wait "$AZURITE_PID" 2>/dev/null
    AZURITE_PID=""
  fi
  if [ -n "$AZURITE_DATA" ]; then rm -rf "$AZURITE_DATA" "$AZURITE_DATA.log"; AZURITE_DATA=""; fi
  return 0
}
