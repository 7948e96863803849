#!/usr/bin/env bash
# Deploys the function app package to processor pools 1..P-1 (azd deploys the "pools" service to pool 0 only; every
# pool runs the same package). Run by azd as the pools service's postdeploy hook, with the Bicep outputs in the
# environment; also usable by hand: AZURE_RESOURCE_GROUP=... AZURE_FUNCTION_APP_POOLS="a b c" scripts/deploy-pools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AZURE_RESOURCE_GROUP:?set by azd from the Bicep outputs}"
: "${AZURE_FUNCTION_APP_POOLS:?set by azd from the Bicep outputs (space-separated pool app names)}"
read -r -a pools <<< "$AZURE_FUNCTION_APP_POOLS"
if [ "${#pools[@]}" -le 1 ]; then exit 0; fi
package=artifacts/functionapp.zip
bash scripts/publish.sh artifacts/functionapp
(cd artifacts/functionapp && rm -f ../functionapp.zip && zip -qr ../functionapp.zip .)
for app in "${pools[@]:1}"; do
  echo "deploying $package to $app"
  az functionapp deployment source config-zip --resource-group "$AZURE_RESOURCE_GROUP" --name "$app" --src "$package"
done
