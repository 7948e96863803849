// The one storage account of a deployment: indexes, build sources, each app's deployment package, the Functions
// host's own containers, and the build queues. Reached only through Entra ID: shared keys are off, so no
// connection string with a secret can exist for it.

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the account.')
param location string

@description('Tags for the account.')
param tags object

@description('Container the indexes live in (Squash__Container).')
param indexContainer string

@description('Container for build sources (vectors and attributes a build reads).')
param buildSourcesContainer string

@description('One container per function app for its deployment package (Flex Consumption pulls the package from there).')
param deploymentContainers string[]

@description('Containers the Functions host keeps its locks and host keys in (created here so that role assignments can be scoped to them).')
param hostContainers string[]

@description('Queues of the build pipeline; each gets its "-poison" twin, where the Functions host moves a message after its last failed attempt.')
param queueNames string[]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // A deleted segment or manifest (gc, a mistaken delete) can be restored for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in concat([indexContainer, buildSourcesContainer], hostContainers, deploymentContainers): {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in concat(queueNames, map(queueNames, q => '${q}-poison')): {
    parent: queueService
    name: queue
  }
]

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
