// Flex Consumption plan and the Function App (Python, v2 programming model).
// Follows Microsoft's azd Functions quickstarts: user-assigned identity, deployment
// package in a blob container reached with that identity, identity-based
// AzureWebJobsStorage (AzureWebJobsStorage__credential / __clientId / __*ServiceUri)
// and Application Insights with Microsoft Entra authentication.

@description('Name of the Function App.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app (must offer Flex Consumption).')
param location string = resourceGroup().location

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('azd service name (azure.yaml) this app is tagged with, so that azd deploy finds it.')
param serviceName string = 'api'

@description('Resource id of the app\'s user-assigned managed identity.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Name of the storage account of the host (AzureWebJobsStorage) and of the deployment package.')
param storageAccountName string

@description('Blob container that receives the deployment package.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Application settings of the app (HOTPATCH_* policy, backend connection); the platform settings below are added to them.')
param appSettings object = {}

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of instances the plan scales out to.')
param maximumInstanceCount int = 40

@description('Python version of the Functions worker.')
param pythonVersion string = '3.11'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Settings of the platform: the host's storage connection (identity-based, no key),
// telemetry with Microsoft Entra authentication, AZURE_CLIENT_ID so that the
// app's DefaultAzureCredential picks the user-assigned identity, and the audit ledger's table endpoint.
var platformSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AZURE_CLIENT_ID: identityClientId
  // The audit ledger (core/ledger.py): a table in this same storage account, reached with the identity
  // (Storage Table Data Contributor, infra/app/storage.bicep).
  HOTPATCH_LEDGER_ENDPOINT: storage.properties.primaryEndpoints.table
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

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
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
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, platformSettings)
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
