// Data-plane roles of one principal on single containers and queues of the account: each app's identity gets
// exactly the containers and queues it works with, never the whole account.

@description('Storage account the containers and queues belong to.')
param storageName string

@description('Object id of the principal (a managed identity, or the deploying user).')
param principalId string

@description('A name known before deployment that stands for the principal (the identity\'s name): role assignment names are derived from it, so that What-If can predict them.')
param assignmentSeed string

@description('ServicePrincipal for a managed identity, User for a person.')
@allowed(['ServicePrincipal', 'User', 'Group'])
param principalType string = 'ServicePrincipal'

@description('Role per container: [{ container, role }], role being a built-in role definition id.')
param containerRoles { container: string, role: string }[] = []

@description('Role per queue: [{ queue, role }], role being a built-in role definition id.')
param queueRoles { queue: string, role: string }[] = []

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [
  for r in containerRoles: {
    parent: blobService
    name: r.container
  }
]

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [
  for r in queueRoles: {
    parent: queueService
    name: r.queue
  }
]

resource containerAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (r, i) in containerRoles: {
    scope: containers[i]
    name: guid(containers[i].id, assignmentSeed, r.role)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', r.role)
      principalId: principalId
      principalType: principalType
    }
  }
]

resource queueAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (r, i) in queueRoles: {
    scope: queues[i]
    name: guid(queues[i].id, assignmentSeed, r.role)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', r.role)
      principalId: principalId
      principalType: principalType
    }
  }
]
