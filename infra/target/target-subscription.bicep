// Everything the app needs in one target subscription: the custom role assigned to
// its identity, and the Event Grid system topic for the subscription's resource
// events (plus, once the code is deployed, the event subscription to the app).

targetScope = 'subscription'

@description('Region of the events resource group.')
param location string

@description('Tags applied to what is created here.')
param tags object = {}

@description('Principal (object) id of the app\'s managed identity.')
param principalId string

@description('Assign the custom role to the identity on this subscription (false when it is assigned at a management group instead).')
param assignRole bool = true

@description('Name (GUID) of the custom role definition.')
param roleDefinitionGuid string

@description('Resource group created here for the system topic.')
param eventsResourceGroupName string

@description('Name of the system topic created here.')
param systemTopicName string

@description('An existing Microsoft.Resources.Subscriptions system topic of this subscription to use instead: { resourceGroup, name }; empty: create one.')
param existingSystemTopic object = {}

@description('Create the event subscription to the app (the function must already be deployed).')
param createEventSubscription bool = false

@description('Resource id of the Function App.')
param functionAppResourceId string

@description('Name of the Event Grid trigger function in the app.')
param functionName string

var useExistingTopic = !empty(existingSystemTopic)
var topicResourceGroupName = useExistingTopic ? existingSystemTopic.resourceGroup : eventsResourceGroupName
var topicName = useExistingTopic ? existingSystemTopic.name : systemTopicName

resource hotpatchRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignRole) {
  name: guid(subscription().id, principalId, roleDefinitionGuid)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Arc Hotpatch Orchestrator: least-privilege access to the Arc machines of this subscription.'
  }
}

resource eventsResourceGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = if (!useExistingTopic) {
  name: eventsResourceGroupName
  location: location
  tags: tags
}

module systemTopic '../eventgrid/system-topic.bicep' = if (!useExistingTopic) {
  name: 'hotpatch-system-topic'
  scope: resourceGroup(eventsResourceGroupName)
  params: {
    name: systemTopicName
    tags: tags
  }
  dependsOn: [
    eventsResourceGroup
  ]
}

module eventSubscription '../eventgrid/event-subscription.bicep' = if (createEventSubscription) {
  name: take('hotpatch-event-subscription-${uniqueString(functionAppResourceId)}', 64)
  scope: resourceGroup(topicResourceGroupName)
  params: {
    systemTopicName: topicName
    functionAppResourceId: functionAppResourceId
    functionName: functionName
  }
  dependsOn: [
    systemTopic
  ]
}

output systemTopic object = {
  subscriptionId: subscription().subscriptionId
  resourceGroup: topicResourceGroupName
  name: topicName
}
