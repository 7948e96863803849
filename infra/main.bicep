// Squash on Azure Functions Flex Consumption: a coordinator app, one app per processor pool and a builder app, all
// running the same package; one storage account reached only through Entra ID; three user-assigned identities with
// least-privilege roles; the pools' function keys in Key Vault; Application Insights. See docs/deploy.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the environment (azd: AZURE_ENV_NAME); names the resource group and tags every resource.')
param environmentName string

@description('Region of every resource; Flex Consumption must be offered there.')
param location string

@description('Resource group to create or update; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@minValue(1)
@maxValue(16)
@description('Processor pools: one Flex Consumption app each, running the same package. A tree node goes to pool (node slot mod poolCount), so each pool\'s instances keep only their own partitions warm.')
param poolCount int = 2

@allowed([512, 2048, 4096])
@description('Instance memory of the coordinator and the pools (MB). 2048 holds a 1M-vector index\'s codes with room for the cache.')
param queryInstanceMemoryMB int = 2048

@allowed([2048, 4096])
@description('Instance memory of the builder (MB): training and encoding hold a whole chunk of source vectors, hence its own app.')
param builderInstanceMemoryMB int = 4096

@minValue(40)
@maxValue(1000)
@description('Most instances of the coordinator app.')
param coordinatorMaximumInstanceCount int = 100

@minValue(40)
@maxValue(1000)
@description('Most instances of each processor-pool app.')
param poolMaximumInstanceCount int = 100

@minValue(40)
@maxValue(1000)
@description('Most instances of the builder app.')
param builderMaximumInstanceCount int = 40

@minValue(1)
@maxValue(1000)
@description('HTTP invocations per instance before Flex starts another (coordinator and pools). Tree nodes mostly wait on children and blob reads, and Flex bills an instance\'s memory once however many invocations share it: 64 (Flex\'s own default at 2048 MB is 16).')
param perInstanceConcurrency int = 64

@minValue(0)
@maxValue(10)
@description('Always-ready instances of the coordinator (0: none). Each is billed around the clock whether or not it works: at 2048 MB about 2 GB x $0.000004/GB-s x 2,592,000 s = $20.74 per instance per 30-day month (Flex always-ready baseline, East US list price 2025), and removes the coordinator\'s cold start.')
param coordinatorAlwaysReady int = 0

@description('Runtime stack name of the Flex apps. The handler is a Native AOT executable named in host.json (customHandler), so it needs no language worker: "custom".')
param runtimeName string = 'custom'

@description('Runtime stack version.')
param runtimeVersion string = '1.0'

@minValue(1)
@maxValue(16)
@description('Branching factor b of the invocation tree (Squash__Branching).')
param branching int = 4

@minValue(0)
@maxValue(4)
@description('Depth L of the invocation tree (Squash__Depth); 0: the coordinator scans every partition itself.')
param depth int = 1

@minValue(1)
@description('Most scan nodes one request may ask for (Squash__MaxTreeNodes): each node is a billed invocation.')
param maxTreeNodes int = 128

@minValue(64)
@description('Segment cache of a query instance (Squash__CacheMb); keep it well under the instance memory.')
param cacheMb int = 1024

@description('Indexes (comma-separated) every coordinator and pool instance opens as it starts (Squash__Preload).')
param preload string = ''

@minLength(3)
@maxLength(63)
@description('Blob container of the indexes (Squash__Container); squash is the CLI\'s default.')
param indexContainer string = 'squash'

@description('Object id of the person deploying (azd: AZURE_PRINCIPAL_ID); given write access to the index and build-source containers so that `squash build --store azure:…` works from their machine. Empty: none.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
@description('Kind of principalId.')
param principalType string = 'User'

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var buildSourcesContainer = 'build-sources'
// The Functions host keeps its locks (azure-webjobs-hosts) and its host and function keys (azure-webjobs-secrets) here.
var hostContainers = ['azure-webjobs-hosts', 'azure-webjobs-secrets']
// The build pipeline's queues (the builder's queue-triggered functions); their -poison twins are created beside them.
var buildQueues = ['squash-build-train', 'squash-build-assign', 'squash-build-encode', 'squash-build-publish']
// Writes: the coordinator's vectors function asks for an ingest here; the builder's ingest function applies the log.
var ingestQueue = 'squash-ingest'
// The builder's ingest function asks its calibrate function to measure the recall calibration again here.
var calibrateQueue = 'squash-calibrate'
var builderQueues = concat(buildQueues, [ingestQueue, calibrateQueue])

var coordinatorName = 'func-coord-${token}'
var builderName = 'func-build-${token}'
var poolNames = [for i in range(0, poolCount): 'func-pool${i}-${token}']
var keyVaultName = 'kv-${token}'
var storageName = 'st${token}'
var coordinatorIdentityName = 'id-coord-${token}'
var poolIdentityName = 'id-pools-${token}'
var builderIdentityName = 'id-build-${token}'
var appInsightsName = 'appi-${token}'
var poolKeySecretPrefix = 'scan-key-'

// Which functions each app runs (the package holds them all).
var coordinatorFunctions = ['health', 'index-info', 'openapi', 'query', 'builds', 'vectors']
var poolFunctions = ['health', 'scan']
var builderFunctions = ['health', 'build-train', 'build-assign', 'build-encode', 'build-publish', 'ingest', 'calibrate']

// Built-in role definition ids.
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

// Tree topology, the same on every app that sends scans: pool i is https://<pool i>.azurewebsites.net, called with
// its function key, which the app reads through a Key Vault reference (the key never sits in the settings).
var poolUrlSettings = toObject(range(0, poolCount), i => 'Squash__Pools__${i}__Url', i => 'https://${poolNames[i]}.azurewebsites.net')
var poolKeySettings = toObject(
  range(0, poolCount),
  i => 'Squash__Pools__${i}__Key',
  i => '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${poolKeySecretPrefix}${i})'
)
var treeSettings = union(poolUrlSettings, poolKeySettings, {
  Squash__Branching: branching
  Squash__Depth: depth
  Squash__MaxTreeNodes: maxTreeNodes
})
var indexSettings = {
  Squash__Store: 'azure:${storage.outputs.blobEndpoint}'
  Squash__Container: indexContainer
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module storage 'modules/storage.bicep' = {
  scope: rg
  name: 'storage'
  params: {
    name: storageName
    location: location
    tags: tags
    indexContainer: indexContainer
    buildSourcesContainer: buildSourcesContainer
    hostContainers: hostContainers
    deploymentContainers: concat(['deploy-coord', 'deploy-build'], map(range(0, poolCount), i => 'deploy-pool${i}'))
    queueNames: builderQueues
  }
}

module coordinatorIdentity 'modules/identity.bicep' = {
  scope: rg
  name: 'identity-coordinator'
  params: {
    name: coordinatorIdentityName
    location: location
    tags: tags
  }
}

module poolIdentity 'modules/identity.bicep' = {
  scope: rg
  name: 'identity-pools'
  params: {
    name: poolIdentityName
    location: location
    tags: tags
  }
}

module builderIdentity 'modules/identity.bicep' = {
  scope: rg
  name: 'identity-builder'
  params: {
    name: builderIdentityName
    location: location
    tags: tags
  }
}

// Coordinator: reads indexes and appends to their write-ahead logs (the vectors API; {index}/log/ in the index
// container, so contributor there); the builds API stages build sources and sends the first build message.
module coordinatorRoles 'modules/storageRoles.bicep' = {
  scope: rg
  name: 'roles-coordinator'
  params: {
    storageName: storageName
    assignmentSeed: coordinatorIdentityName
    principalId: coordinatorIdentity.outputs.principalId
    containerRoles: [
      { container: indexContainer, role: storageBlobDataContributor }
      { container: buildSourcesContainer, role: storageBlobDataContributor }
      { container: 'deploy-coord', role: storageBlobDataContributor }
      { container: hostContainers[0], role: storageBlobDataContributor }
      { container: hostContainers[1], role: storageBlobDataContributor }
    ]
    queueRoles: [
      { queue: buildQueues[0], role: storageQueueDataMessageSender }
      { queue: ingestQueue, role: storageQueueDataMessageSender }
    ]
  }
  dependsOn: [storage]
}

// Processor pools: read indexes, nothing else of the data.
module poolRoles 'modules/storageRoles.bicep' = {
  scope: rg
  name: 'roles-pools'
  params: {
    storageName: storageName
    assignmentSeed: poolIdentityName
    principalId: poolIdentity.outputs.principalId
    containerRoles: concat(
      [
        { container: indexContainer, role: storageBlobDataReader }
        { container: hostContainers[0], role: storageBlobDataContributor }
        { container: hostContainers[1], role: storageBlobDataContributor }
      ],
      map(range(0, poolCount), i => { container: 'deploy-pool${i}', role: storageBlobDataContributor })
    )
  }
  dependsOn: [storage]
}

// Builder: writes indexes, reads and writes build sources, works the build, ingest and calibrate queues (their poison queues included).
module builderRoles 'modules/storageRoles.bicep' = {
  scope: rg
  name: 'roles-builder'
  params: {
    storageName: storageName
    assignmentSeed: builderIdentityName
    principalId: builderIdentity.outputs.principalId
    containerRoles: [
      { container: indexContainer, role: storageBlobDataContributor }
      { container: buildSourcesContainer, role: storageBlobDataContributor }
      { container: 'deploy-build', role: storageBlobDataContributor }
      { container: hostContainers[0], role: storageBlobDataContributor }
      { container: hostContainers[1], role: storageBlobDataContributor }
    ]
    queueRoles: map(concat(builderQueues, map(builderQueues, q => '${q}-poison')), q => {
      queue: q
      role: storageQueueDataContributor
    })
  }
  dependsOn: [storage]
}

// The person deploying builds indexes from their machine (squash build --store azure:…).
module deployerRoles 'modules/storageRoles.bicep' = if (!empty(principalId)) {
  scope: rg
  name: 'roles-deployer'
  params: {
    storageName: storageName
    assignmentSeed: 'deployer-${principalId}'
    principalId: principalId
    principalType: principalType
    containerRoles: [
      { container: indexContainer, role: storageBlobDataContributor }
      { container: buildSourcesContainer, role: storageBlobDataContributor }
    ]
  }
  dependsOn: [storage]
}

module monitoring 'modules/monitoring.bicep' = {
  scope: rg
  name: 'monitoring'
  params: {
    workspaceName: 'log-${token}'
    appInsightsName: appInsightsName
    location: location
    tags: tags
    publisherPrincipalIds: [
      coordinatorIdentity.outputs.principalId
      poolIdentity.outputs.principalId
      builderIdentity.outputs.principalId
    ]
    publisherNames: [coordinatorIdentityName, poolIdentityName, builderIdentityName]
  }
}

module pools 'modules/functionApp.bicep' = [
  for i in range(0, poolCount): {
    scope: rg
    name: 'app-pool${i}'
    params: {
      name: poolNames[i]
      planName: 'plan-pool${i}-${token}'
      location: location
      tags: tags
      // azd deploys the pools service to pool 0; its postdeploy hook copies the same package to the others.
      serviceName: i == 0 ? 'pools' : ''
      identityId: poolIdentity.outputs.id
      identityClientId: poolIdentity.outputs.clientId
      blobEndpoint: storage.outputs.blobEndpoint
      queueEndpoint: storage.outputs.queueEndpoint
      deploymentContainer: 'deploy-pool${i}'
      appInsightsName: appInsightsName
      instanceMemoryMB: queryInstanceMemoryMB
      maximumInstanceCount: poolMaximumInstanceCount
      perInstanceConcurrency: perInstanceConcurrency
      runtimeName: runtimeName
      runtimeVersion: runtimeVersion
      functions: poolFunctions
      appSettings: union(indexSettings, treeSettings, {
        Squash__InstanceMemoryMb: queryInstanceMemoryMB
        Squash__CacheMb: cacheMb
        Squash__Preload: preload
      })
    }
    dependsOn: [poolRoles, monitoring]
  }
]

module coordinator 'modules/functionApp.bicep' = {
  scope: rg
  name: 'app-coordinator'
  params: {
    name: coordinatorName
    planName: 'plan-coord-${token}'
    location: location
    tags: tags
    serviceName: 'coordinator'
    identityId: coordinatorIdentity.outputs.id
    identityClientId: coordinatorIdentity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    deploymentContainer: 'deploy-coord'
    appInsightsName: appInsightsName
    instanceMemoryMB: queryInstanceMemoryMB
    maximumInstanceCount: coordinatorMaximumInstanceCount
    perInstanceConcurrency: perInstanceConcurrency
    alwaysReadyInstances: coordinatorAlwaysReady
    runtimeName: runtimeName
    runtimeVersion: runtimeVersion
    functions: coordinatorFunctions
    appSettings: union(indexSettings, treeSettings, {
      Squash__InstanceMemoryMb: queryInstanceMemoryMB
      Squash__CacheMb: cacheMb
      Squash__Preload: preload
      // A cold coordinator wakes the pools as it starts, so their cold starts overlap its own.
      Squash__WakePoolsOnStart: 'true'
    })
  }
  dependsOn: [coordinatorRoles, monitoring]
}

module builder 'modules/functionApp.bicep' = {
  scope: rg
  name: 'app-builder'
  params: {
    name: builderName
    planName: 'plan-build-${token}'
    location: location
    tags: tags
    serviceName: 'builder'
    identityId: builderIdentity.outputs.id
    identityClientId: builderIdentity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    deploymentContainer: 'deploy-build'
    appInsightsName: appInsightsName
    instanceMemoryMB: builderInstanceMemoryMB
    maximumInstanceCount: builderMaximumInstanceCount
    perInstanceConcurrency: perInstanceConcurrency
    runtimeName: runtimeName
    runtimeVersion: runtimeVersion
    functions: builderFunctions
    appSettings: union(indexSettings, {
      Squash__InstanceMemoryMb: builderInstanceMemoryMB
      Squash__CacheMb: builderInstanceMemoryMB / 4
    })
  }
  dependsOn: [builderRoles, monitoring]
}


module keyVault 'modules/keyVault.bicep' = {
  scope: rg
  name: 'key-vault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    poolNames: poolNames
    keyNamePrefix: poolKeySecretPrefix
    readerPrincipalIds: [
      coordinatorIdentity.outputs.principalId
      poolIdentity.outputs.principalId
    ]
    readerNames: [coordinatorIdentityName, poolIdentityName]
  }
  dependsOn: [pools]
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_STORAGE_ACCOUNT string = storage.outputs.name
output SQUASH_STORE string = 'azure:${storage.outputs.blobEndpoint}'
output SQUASH_CONTAINER string = indexContainer
output SQUASH_ENDPOINT string = 'https://${coordinator.outputs.defaultHostName}'
output AZURE_FUNCTION_APP_COORDINATOR string = coordinator.outputs.name
output AZURE_FUNCTION_APP_BUILDER string = builder.outputs.name
output AZURE_FUNCTION_APP_POOLS string = join(poolNames, ' ')
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
