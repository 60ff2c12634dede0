// Event Grid system topic for the Azure subscription events of the subscription
// this resource group is in (ResourceWriteSuccess and the like). Azure allows one
// such topic per subscription; an existing one can be reused instead
// (main.bicep parameter existingSubscriptionSystemTopics).

@description('Name of the system topic.')
param name string

@description('Tags applied to the system topic.')
param tags object = {}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: name
  location: 'global'
  tags: tags
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

output id string = systemTopic.id
output name string = systemTopic.name
