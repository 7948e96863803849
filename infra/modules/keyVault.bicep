// Holds the processor pools' function keys for the tree. The apps that call pools (the coordinator, and the pools
// themselves for deeper trees) read them through a Key Vault reference in their settings, resolved with their
// managed identity: the keys never appear in any app's settings, and only those identities can read them.

@description('Key Vault name (3-24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the vault.')
param location string

@description('Tags for the vault.')
param tags object

@description('Processor-pool apps, in pool order: secret <keyNamePrefix><i> holds pool i\'s default host key.')
param poolNames string[]

@description('Name prefix of the pool-key secrets.')
param keyNamePrefix string

@description('Principal ids (managed identities) allowed to read the pool keys.')
param readerPrincipalIds string[]

@description('Names known before deployment standing for those principals (role assignment names derive from them).')
param readerNames string[]

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access by Azure RBAC only (no access policies), as for storage.
    enableRbacAuthorization: true
    enableSoftDelete: true
    // Short, so that a torn-down environment's name can be reused soon (purge protection stays off for the same reason).
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource poolApps 'Microsoft.Web/sites@2024-04-01' existing = [
  for name in poolNames: {
    name: name
  }
]

// Read from each pool app's host (its keys live in the azure-webjobs-secrets container) when this module runs, i.e.
// after the pool apps exist; a re-deployment picks up a rotated key.
resource poolKeys 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for (name, i) in poolNames: {
    parent: vault
    name: '${keyNamePrefix}${i}'
    properties: {
      value: listKeys('${poolApps[i].id}/host/default', '2024-04-01').functionKeys.default
      contentType: 'function key of processor pool ${i} (${name})'
    }
  }
]

// The vault holds nothing but the pool keys: reading all of it is reading those.
resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (principalId, i) in readerPrincipalIds: {
    scope: vault
    name: guid(vault.id, readerNames[i], keyVaultSecretsUser)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]

output name string = vault.name
