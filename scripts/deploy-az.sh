#!/usr/bin/env bash
# The az equivalent of `azd up`: provisions infra/main.bicep at subscription scope with infra/main.bicepparam, then
# deploys the one package (scripts/publish.sh) to the coordinator, every processor pool and the builder.
# Needs: az login, and AZURE_ENV_NAME / AZURE_LOCATION (read by main.bicepparam; AZURE_PRINCIPAL_ID optional).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AZURE_ENV_NAME:?name of the environment, e.g. squash-dev}"
: "${AZURE_LOCATION:?Azure region offering Flex Consumption, e.g. eastus}"
export AZURE_PRINCIPAL_ID=${AZURE_PRINCIPAL_ID:-$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)}
deployment="squash-$AZURE_ENV_NAME"
az deployment sub create --name "$deployment" --location "$AZURE_LOCATION" \
  --template-file infra/main.bicep --parameters infra/main.bicepparam
output() { az deployment sub show --name "$deployment" --query "properties.outputs.$1.value" -o tsv; }
rg=$(output AZURE_RESOURCE_GROUP)
bash scripts/publish.sh artifacts/functionapp
(cd artifacts/functionapp && rm -f ../functionapp.zip && zip -qr ../functionapp.zip .)
for app in $(output AZURE_FUNCTION_APP_COORDINATOR) $(output AZURE_FUNCTION_APP_POOLS) $(output AZURE_FUNCTION_APP_BUILDER); do
  echo "deploying artifacts/functionapp.zip to $app"
  az functionapp deployment source config-zip --resource-group "$rg" --name "$app" --src artifacts/functionapp.zip
done
echo "endpoint: $(output SQUASH_ENDPOINT)  store: $(output SQUASH_STORE)  container: $(output SQUASH_CONTAINER)"
