#!/usr/bin/env bash
# Assembles the deployable function app: a self-contained linux-x64 handler + host.json + one folder per
# function with its function.json (what `azd deploy` zips). Output: artifacts/functionapp (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-artifacts/functionapp}
# ReadyToRun: precompiled code instead of JIT at start-up, which is most of a cold start.
dotnet publish src/Squash.Functions -c Release -r linux-x64 --self-contained true -p:PublishReadyToRun=true -nologo -clp:ErrorsOnly -o "$out"
ls "$out"/host.json "$out"/*/function.json
