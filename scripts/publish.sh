#!/usr/bin/env bash
# Assembles the deployable function app: a self-contained linux-x64 handler + host.json + one folder per
# function with its function.json (what `azd deploy` zips). Output: artifacts/functionapp (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-artifacts/functionapp}
# Native AOT (the csproj's PublishAot): one native executable, no JIT at start-up, which was most of a cold
# start. SQUASH_PUBLISH_MODE=readytorun publishes the JIT-based app with precompiled code instead (where no
# native toolchain is available; ~0.5 s slower to start).
mode=${SQUASH_PUBLISH_MODE:-aot}
# The AOT compiler links with the platform's C toolchain (clang or gcc); without one, say so and publish
# the ReadyToRun app, which needs none, rather than fail with a linker error.
if [ "$mode" = aot ] && ! command -v clang >/dev/null && ! command -v gcc >/dev/null; then
  echo "publish: no C toolchain (clang or gcc) for Native AOT; publishing the ReadyToRun app instead (slower cold start)" >&2
  mode=readytorun
fi
case "$mode" in
  aot) dotnet publish src/Squash.Functions -c Release -r linux-x64 -nologo -clp:ErrorsOnly -o "$out" ;;
  readytorun) dotnet publish src/Squash.Functions -c Release -r linux-x64 --self-contained true -p:PublishAot=false -p:PublishReadyToRun=true -nologo -clp:ErrorsOnly -o "$out" ;;
  *) echo "SQUASH_PUBLISH_MODE must be aot or readytorun" >&2; exit 2 ;;
esac
# Debug symbols stay out of the deployable folder (a 65 MB .dbg beside a 27 MB app).
rm -f "$out"/*.dbg "$out"/*.pdb
ls "$out"/host.json "$out"/*/function.json
