// Phase 3 of a deployment: connect every target subscription's system topic to the
// app's Event Grid function. Run after the code is deployed (the function must
// exist); azd does it in the postdeploy hook (infra/hooks/wire_event_grid.py).
//
//   az deployment sub create --location <region> --template-file infra/event-subscriptions.bicep \
//     --parameters functionAppResourceId=<AZURE_FUNCTION_APP_ID> systemTopics=<EVENT_GRID_SYSTEM_TOPICS>

targetScope = 'subscription'

@description('System topics to subscribe, as output by main.bicep (EVENT_GRID_SYSTEM_TOPICS): [{ subscriptionId, resourceGroup, name }].')
param systemTopics array

@description('Resource id of the Function App (output AZURE_FUNCTION_APP_ID of main.bicep).')
param functionAppResourceId string

@description('Name of the Event Grid trigger function in the app.')
param functionName string = 'on_arc_machine_written'

module eventSubscriptions 'eventgrid/event-subscription.bicep' = [
  for (topic, i) in systemTopics: {
    name: take('hotpatch-event-subscription-${i}-${uniqueString(topic.subscriptionId, topic.resourceGroup, topic.name)}', 64)
    scope: resourceGroup(topic.subscriptionId, topic.resourceGroup)
    params: {
      systemTopicName: topic.name
      functionAppResourceId: functionAppResourceId
      functionName: functionName
    }
  }
]
