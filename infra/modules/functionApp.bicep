// One Flex Consumption (FC1, Linux) function app with its own plan (Flex hosts one app per plan), running the
// Squash package: a Native AOT custom handler. Everything it touches it reaches with its user-assigned identity:
// host storage, its deployment package, the index store, Key Vault references and Application Insights.

@description('Function app name (also its host name: <name>.azurewebsites.net; the first 32 characters must differ between apps sharing the storage account).')
@minLength(2)
@maxLength(32)
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags; the app also gets azd-service-name.')
param tags object

@description('azd service deployed to this app (azure.yaml), or an empty string for none.')
param serviceName string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (what the Functions host and the Azure SDK use to pick it).')
param identityClientId string

@description('Blob endpoint of the storage account (https://<account>.blob.core.windows.net/).')
param blobEndpoint string

@description('Queue endpoint of the storage account.')
param queueEndpoint string

@description('Container holding this app\'s deployment package.')
param deploymentContainer string

@description('Application Insights component the app reports to.')
param appInsightsName string

@description('Memory of one instance (MB); Flex bills it for every second an instance executes.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int

@description('Most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('HTTP invocations one instance takes before another is started.')
@minValue(1)
@maxValue(1000)
param perInstanceConcurrency int

@description('Always-ready instances of the HTTP functions (0: none, every instance is on demand).')
@minValue(0)
param alwaysReadyInstances int = 0

@description('Runtime stack of the plan: the handler is a native executable, so "custom".')
param runtimeName string

@description('Version of that runtime stack.')
param runtimeVersion string

@description('Functions this app runs (host.json "functions", set per app); the package holds all of them.')
param functions string[]

@description('The app\'s own settings (Squash__*), name to value.')
param appSettings object

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Identity-based host storage (no AzureWebJobsStorage connection string), telemetry with the identity, and the
// identity the Azure SDK picks for the index store (DefaultAzureCredential reads AZURE_CLIENT_ID).
var platformSettings = {
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// host.json's "functions" list, overridden per app: every app ships the same package and runs only its part.
var functionList = map(range(0, length(functions)), i => {
  name: 'AzureFunctionsJobHost__functions__${i}'
  value: functions[i]
})

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: empty(serviceName) ? tags : union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(map(items(union(platformSettings, appSettings)), s => { name: s.key, value: string(s.value) }), functionList)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReadyInstances > 0 ? [{ name: 'http', instanceCount: alwaysReadyInstances }] : []
        triggers: {
          http: {
            perInstanceConcurrency: perInstanceConcurrency
          }
        }
      }
      runtime: {
        name: runtimeName
        version: runtimeVersion
      }
    }
  }
}

// Deployments go through Entra ID (azd and az use the deployer's token); publishing with a user name and password is off.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
