# Shared setup steps for scripts/*.sh: install what a fresh machine lacks, by package name.

# Debian's dataset-fashion-mnist: the real benchmark set (gzip IDX files under /usr/share/datasets).
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
ensure_fashion_mnist() {
  [ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ] && return 0
  command -v apt-get >/dev/null || return 1
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # One install at a time on the machine (a second run waits, then finds the files): apt-get fails at once
  # when another apt holds the dpkg lock, so it also waits for a foreign apt (DPkg::Lock::Timeout).
  (
    command -v flock >/dev/null && flock 9
    [ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ] && exit 0
    echo "installing dataset-fashion-mnist (Debian package)..." >&2
    $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq dataset-fashion-mnist >/dev/null 2>&1
  ) 9>"${TMPDIR:-/tmp}/squash-apt.lock" || return 1
  [ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]
}

# A lock file for one checkout (keyed by its path), so that two runs on one machine take turns at a step
# that writes shared files (the build's obj/ and bin/, npm ci's node_modules).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
repo_lock_file() {
  echo "${TMPDIR:-/tmp}/squash-$1-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1).lock"
}

# Runs a command holding the lock file (flock from util-linux; without it, unlocked).
with_lock() {
  local lock=$1; shift
  if command -v flock >/dev/null; then flock "$lock" "$@"; else "$@"; fi
}

# Azurite (npm, pinned in tools/azurite/package-lock.json): the Azure Storage emulator the contract tests run against.
AZURITE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/azurite"
AZURITE_PID=""
AZURITE_DATA=""
AZURITE_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

azurite_installed() { [ "$("$AZURITE_DIR/node_modules/.bin/azurite" --version 2>/dev/null)" = "3.37.0" ]; }

ensure_azurite() {
  azurite_installed && return 0
  command -v npm >/dev/null || { echo "npm is not installed: cannot install Azurite" >&2; return 1; }
  # npm ci deletes node_modules first: a second run installing at the same time waits, then finds it done.
  (
    flock 9
    azurite_installed && exit 0
    echo "installing Azurite (npm ci in tools/azurite)..." >&2
    cd "$AZURITE_DIR" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1
  ) 9>"$(repo_lock_file npm)" || return 1
  azurite_installed
}

# N distinct loopback ports that nobody listens on: the kernel picks them (bound together, so distinct);
# without python3, random ports with no listener.
free_ports() {
  local n=$1
  if command -v python3 >/dev/null; then
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()' "$n"
    return
  fi
  local ports=() p
  while [ ${#ports[@]} -lt "$n" ]; do
    p=$((20000 + RANDOM % 40000))
    if ! (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && [[ " ${ports[*]} " != *" $p "* ]]; then ports+=("$p"); fi
  done
  echo "${ports[*]}"
}

# Starts blob + queue (+ table) on loopback with fresh storage; exports SQUASH_TEST_AZURITE.
# Ports: free ones picked for this run, so two test runs can share a machine; AZURITE_BLOB_PORT /
# AZURITE_QUEUE_PORT (/ AZURITE_TABLE_PORT) fix them. It only returns 0 once this run's own Azurite
# process is the one listening: a foreign server on a port is reported, never used.
start_azurite() {
  local attempt
  for attempt in 1 2 3; do
    local picked blob queue table
    picked=($(free_ports 3))
    blob=${AZURITE_BLOB_PORT:-${picked[0]}}
    queue=${AZURITE_QUEUE_PORT:-${picked[1]}}
    table=${AZURITE_TABLE_PORT:-${picked[2]}}
    if start_azurite_on "$blob" "$queue" "$table"; then return 0; fi
    # Another process took a port we picked between the check and Azurite's start: pick again.
    # Ports the caller chose are not retried.
    if [ "${AZURITE_PORT_RACE:-0}" = 1 ] && [ -z "${AZURITE_BLOB_PORT:-}${AZURITE_QUEUE_PORT:-}${AZURITE_TABLE_PORT:-}" ]; then continue; fi
    return 1
  done
  return 1
}

start_azurite_on() {
  local blob=$1 queue=$2 table=$3
  AZURITE_PORT_RACE=0
  AZURITE_DATA=$(mktemp -d)
  # --disableTelemetry: without it Azurite dials the cloud metadata endpoint and hangs on SIGTERM.
  "$AZURITE_DIR/node_modules/.bin/azurite" --silent --disableTelemetry --skipApiVersionCheck \
    --location "$AZURITE_DATA" --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 \
    --blobPort "$blob" --queuePort "$queue" --tablePort "$table" \
    >"$AZURITE_DATA.log" 2>&1 &
  AZURITE_PID=$!
  local i ready=""
  for i in $(seq 1 600); do
    # Azurite's own announcement, not just an open port: a foreign listener on the port opens it too.
    if grep -q "Blob service is successfully listening at http://127.0.0.1:$blob\$" "$AZURITE_DATA.log" 2>/dev/null \
      && grep -q "Queue service is successfully listening at http://127.0.0.1:$queue\$" "$AZURITE_DATA.log" 2>/dev/null; then
      ready=1
      break
    fi
    kill -0 "$AZURITE_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -n "$ready" ] && kill -0 "$AZURITE_PID" 2>/dev/null && azurite_owns_port "$blob" && azurite_owns_port "$queue"; then
    export SQUASH_TEST_AZURITE="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZURITE_ACCOUNT_KEY;BlobEndpoint=http://127.0.0.1:$blob/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$queue/devstoreaccount1;"
    echo "Azurite (pid $AZURITE_PID) listens on 127.0.0.1:$blob (blob), :$queue (queue)" >&2
    return 0
  fi
  if grep -q EADDRINUSE "$AZURITE_DATA.log" 2>/dev/null; then
    AZURITE_PORT_RACE=1
    echo "Azurite could not start: a port of $blob/$queue/$table is held by another process ($(grep -o 'address already in use.*' "$AZURITE_DATA.log" | head -1))" >&2
  elif [ -z "$ready" ] && kill -0 "$AZURITE_PID" 2>/dev/null; then
    echo "Azurite did not announce ports $blob/$queue within 60 s (log: $AZURITE_DATA.log):" >&2
    cat "$AZURITE_DATA.log" >&2 || true
  elif ! kill -0 "$AZURITE_PID" 2>/dev/null; then
    echo "Azurite exited during start-up (log below):" >&2
    cat "$AZURITE_DATA.log" >&2 || true
  fi
  stop_azurite
  return 1
}

# True when the listener on 127.0.0.1:PORT is this run's Azurite (by PID; ss names it for our own processes).
# Without ss the log line checked above is the evidence.
azurite_owns_port() {
  local port=$1 listeners
  command -v ss >/dev/null || return 0
  listeners=$(ss -ltnpH "sport = :$port" 2>/dev/null)
  if [[ "$listeners" == *"pid=$AZURITE_PID,"* ]]; then return 0; fi
  echo "port $port is not served by this run's Azurite (pid $AZURITE_PID) but by: ${listeners:-nobody}" >&2
  return 1
}

# For after the tests: when Azurite died during the run, say so once instead of leaving only the tests' errors.
azurite_check_alive() {
  [ -n "$AZURITE_PID" ] || return 0
  kill -0 "$AZURITE_PID" 2>/dev/null && return 0
  echo "error: Azurite (pid $AZURITE_PID) died during the run; the Azure Storage tests failed because of that. Its log:" >&2
  tail -n 20 "$AZURITE_DATA.log" >&2 2>/dev/null || true
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
