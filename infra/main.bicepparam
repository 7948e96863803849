// Parameters of infra/main.bicep. azd fills the environment variables (AZURE_ENV_NAME, AZURE_LOCATION,
// AZURE_PRINCIPAL_ID); with az, export them or pass --parameters name=value after this file.
using 'main.bicep'

param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'squash')
param location = readEnvironmentVariable('AZURE_LOCATION', 'eastus')
param principalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')
param poolCount = int(readEnvironmentVariable('SQUASH_POOL_COUNT', '2'))
param coordinatorAlwaysReady = int(readEnvironmentVariable('SQUASH_COORDINATOR_ALWAYS_READY', '0'))
param queryInstanceMemoryMB = 2048
param builderInstanceMemoryMB = 4096
param perInstanceConcurrency = 64
param branching = 4
param depth = 1
param cacheMb = 1024
