// User-assigned managed identity of the Function App. Everything the app reaches
// (storage, Application Insights, the Durable Task Scheduler, ARM for the Arc
// machines) is granted to this identity; the app selects it with AZURE_CLIENT_ID.

@description('Name of the user-assigned managed identity.')
param name string

@description('Region of the identity.')
param location string = resourceGroup().location

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
