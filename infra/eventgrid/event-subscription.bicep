// Delivers "an Arc machine was written" to the app's Event Grid function: only
// Microsoft.Resources.ResourceWriteSuccess events whose data.operationName is
// Microsoft.HybridCompute/machines/write. The app's own writes
// (licenseProfiles/write, runCommands/write) have other operation names, so they
// never come back to it as events.
//
// The function must exist when this is deployed (Event Grid validates the
// destination), so it runs after the code is deployed: see docs/deploy.md.

@description('Name of the existing system topic (Microsoft.Resources.Subscriptions) in this resource group.')
param systemTopicName string

@description('Resource id of the Function App.')
param functionAppResourceId string

@description('Name of the Event Grid trigger function in the app.')
param functionName string = 'on_arc_machine_written'

@description('Name of the event subscription; derived from the app so that two deployments can share one system topic.')
param eventSubscriptionName string = take('${last(split(functionAppResourceId, '/'))}-machine-written', 64)

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource machineWritten 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: eventSubscriptionName
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppResourceId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.HybridCompute/machines/write'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output id string = machineWritten.id
