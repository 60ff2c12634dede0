// Optional Durable Functions backend: a Durable Task Scheduler with one task hub,
// reached by the app's managed identity (Durable Task Data Contributor). The app
// gets DURABLE_TASK_SCHEDULER_CONNECTION_STRING from main.bicep; host.json must
// then declare storageProvider type "azureManaged" (see docs/deploy.md).

@description('Name of the scheduler (3-64 letters, digits and hyphens).')
param name string

@description('Region of the scheduler (must offer the Durable Task Scheduler).')
param location string = resourceGroup().location

@description('Tags applied to the scheduler.')
param tags object = {}

@description('Name of the task hub: the value of HOTPATCH_TASK_HUB, which host.json uses as hubName.')
param taskHubName string

@description('SKU of the scheduler.')
@allowed([
  'Consumption'
  'Dedicated'
])
param skuName string = 'Consumption'

@description('Capacity units (Dedicated SKU only).')
param skuCapacity int = 1

@description('Addresses allowed to reach the scheduler; an empty list denies everything.')
param ipAllowlist array = [
  '0.0.0.0/0'
]

@description('Principal (object) id of the app\'s managed identity.')
param principalId string

var durableTaskDataContributorRoleId = '0ad04412-c4d5-4796-b79c-f76d14c8d402' // Durable Task Data Contributor

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    ipAllowlist: ipAllowlist
    sku: skuName == 'Dedicated'
      ? {
          name: skuName
          capacity: skuCapacity
        }
      : {
          name: skuName
        }
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
}

resource dataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scheduler.id, principalId, durableTaskDataContributorRoleId)
  scope: scheduler
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = scheduler.name
output endpoint string = scheduler.properties.endpoint
output taskHubName string = taskHub.name
output dashboardUrl string = taskHub.properties.dashboardUrl
