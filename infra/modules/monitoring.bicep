// Log Analytics + workspace-based Application Insights. Local (instrumentation-key) ingestion is off: the apps
// send their telemetry with their managed identity (Monitoring Metrics Publisher), so the connection string in
// their settings is an address, not a credential.

@description('Log Analytics workspace name.')
param workspaceName string

@description('Application Insights component name.')
param appInsightsName string

@description('Region of both.')
param location string

@description('Tags for both.')
param tags object

@description('Days the workspace keeps logs and traces (30 is the included retention).')
@minValue(30)
@maxValue(730)
param retentionDays int = 30

@description('Principal ids (managed identities) allowed to send telemetry.')
param publisherPrincipalIds string[]

@description('Names known before deployment standing for those principals (role assignment names derive from them).')
param publisherNames string[]

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource publishers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (principalId, i) in publisherPrincipalIds: {
    scope: appInsights
    name: guid(appInsights.id, publisherNames[i], monitoringMetricsPublisher)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]

output appInsightsName string = appInsights.name
