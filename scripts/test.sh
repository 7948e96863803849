#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test project.
# Ends with a plain "N passed, N failed" line (what CI reads).
set -uo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/setup.sh
ensure_fashion_mnist || echo "warning: dataset-fashion-mnist is not installed; the Fashion-MNIST tests will fail" >&2

log=$(mktemp)
# Azurite is killed by PID however the run ends (failed tests included).
trap 'stop_azurite; rm -f "$log" "$log.build"' EXIT
if ! ensure_azurite || ! start_azurite; then
  echo "warning: Azurite could not be started; the Azure Storage tests will fail" >&2
fi
# Two runs in one checkout take turns to build (they would write the same obj/ and bin/ files); the second
# finds everything up to date. Tests that build too (the publish test) take the same lock.
export SQUASH_BUILD_LOCK
SQUASH_BUILD_LOCK=$(repo_lock_file build)
with_lock "$SQUASH_BUILD_LOCK" dotnet build Serverless.sln -c Release -nologo -clp:ErrorsOnly 2>&1 | tee "$log.build"
build_rc=${PIPESTATUS[0]}
if [ "$build_rc" -ne 0 ]; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
# A test process that stops making progress is ended (and named) after 20 minutes instead of hanging the run.
dotnet test Serverless.sln -c Release --no-build -nologo --blame-hang-timeout 20m --blame-hang-dump-type none "$@" 2>&1 | tee "$log"
test_rc=${PIPESTATUS[0]}
azurite_check_alive || test_rc=1

# Sum the per-project summary lines: "Passed!  - Failed: 0, Passed: 12, Skipped: 0, Total: 12, ..."
read -r passed failed skipped < <(grep -E '(Passed|Failed)!  - Failed:' "$log" | sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\2 \1 \3/' \
  | awk '{p+=$1; f+=$2; s+=$3} END {print p+0, f+0, s+0}')
if [ "$test_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$test_rc"
