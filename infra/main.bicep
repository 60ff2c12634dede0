// Arc Hotpatch Orchestrator: the Function App and everything it needs.
//
// Deployed at subscription scope (azd provision, or az deployment sub create): it
// creates the app's resource group in this subscription, and in every target
// subscription the custom role assignment and the Event Grid system topic.
// See docs/deploy.md for the parameters, the RBAC and the Event Grid wiring.

targetScope = 'subscription'

// ---------------------------------------------------------------- environment

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: names and tags (azd-env-name) the resources.')
param environmentName string

@minLength(1)
@description('Region of the app and its resources; it must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group of the app; empty: rg-<environmentName>.')
param resourceGroupName string = ''

// ---------------------------------------------------------------- target subscriptions

@description('Subscriptions whose Arc machines the app manages: it gets the custom role and an Event Grid system topic on each. Empty, with targetSubscriptionIdsCsv empty too: this subscription only.')
param targetSubscriptionIds array = []

@description('The same list as comma-separated text (azd passes TARGET_SUBSCRIPTION_IDS here); merged with targetSubscriptionIds.')
param targetSubscriptionIdsCsv string = ''

@description('Assign the custom role on each target subscription. Set false when the role is assigned at a management group instead (infra/rbac/management-group.bicep).')
param subscriptionRoleAssignmentsEnabled bool = true

@description('Leave HOTPATCH_SUBSCRIPTIONS empty so that rollouts cover every subscription the identity can read (use with a management-group role assignment); false: exactly the target subscriptions.')
param discoverAllReadableSubscriptions bool = false

@description('Display name of the custom role (unique in the tenant).')
param customRoleName string = 'Arc Hotpatch Orchestrator (${environmentName})'

@description('Target subscriptions that already have a Microsoft.Resources.Subscriptions system topic (Azure allows one per subscription), to reuse: { "<subscriptionId>": { "resourceGroup": "<rg>", "name": "<topic>" } }.')
param existingSubscriptionSystemTopics object = {}

@description('Resource group created in each target subscription for its system topic.')
param eventsResourceGroupName string = 'rg-${environmentName}-hotpatch-events'

@description('Create the event subscriptions to the app\'s Event Grid function in this deployment. Only once the code is deployed (the function must exist); azd does it in its postdeploy hook instead.')
param eventSubscriptionsEnabled bool = false

// ---------------------------------------------------------------- hosting

@description('Upper bound of Flex Consumption instances.')
param maximumInstanceCount int = 40

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Days Log Analytics keeps the app\'s telemetry.')
param logRetentionInDays int = 30

// ---------------------------------------------------------------- Durable Functions backend

@description('Use the Durable Task Scheduler as the Durable Functions backend instead of Azure Storage. host.json must then declare storageProvider type "azureManaged" (docs/deploy.md).')
param durableTaskSchedulerEnabled bool = false

@description('SKU of the Durable Task Scheduler.')
@allowed([
  'Consumption'
  'Dedicated'
])
param durableTaskSchedulerSku string = 'Consumption'

@description('Capacity units of a Dedicated scheduler.')
param durableTaskSchedulerCapacity int = 1

@description('Region of the Durable Task Scheduler (it is offered in fewer regions than Functions).')
param durableTaskSchedulerLocation string = location

@description('Addresses allowed to reach the scheduler; an empty list denies everything.')
param durableTaskSchedulerIpAllowlist array = [
  '0.0.0.0/0'
]

// ---------------------------------------------------------------- app settings (HOTPATCH_*, SPEC section 4)
// One parameter per setting of core/policy.py (SETTINGS); the defaults
// are the Policy defaults, the safe ones: no dry run, reboots only after approval.

@minLength(3)
@maxLength(45)
@description('HOTPATCH_TASK_HUB: Durable Functions task hub (host.json hubName). Letters and digits, starting with a letter.')
param hotpatchTaskHub string = 'ArcHotpatch'

@allowed([
  'auto'
  'approval'
  'window'
  'never'
])
@description('HOTPATCH_REBOOT_POLICY: when a machine may be rebooted.')
param hotpatchRebootPolicy string = 'approval'

@allowed([
  'proactive'
  'reactive'
  'off'
])
@description('HOTPATCH_WORKAROUND_MODE: October 2025 licensing workaround.')
param hotpatchWorkaroundMode string = 'proactive'

@description('HOTPATCH_DRY_RUN: check and plan only; change nothing.')
param hotpatchDryRun bool = false

@description('HOTPATCH_EXCLUDE_TAG: tag name whose value "exclude" skips a machine.')
param hotpatchExcludeTag string = 'hotpatch'

@minValue(1)
@description('HOTPATCH_CONCURRENCY: machines worked on at once per subscription.')
param hotpatchConcurrency int = 20

@description('HOTPATCH_WAVES: cumulative rollout rings, canary first (counts or percentages).')
param hotpatchWaves string = '1,10%,100%'

@description('HOTPATCH_GUARDRAIL: share of escalated machines in a wave that halts the rollout (0-1 or a percentage).')
param hotpatchGuardrail string = '0.2'

@description('HOTPATCH_ENABLE_TIMEOUT: how long enablement may stay Enabling (90s, 30m, 2h, 1d; a bare number is minutes).')
param hotpatchEnableTimeout string = '30m'

@description('HOTPATCH_REBOOT_TIMEOUT: how long a rebooting machine may take to come back.')
param hotpatchRebootTimeout string = '30m'

@description('HOTPATCH_APPROVAL_TIMEOUT: how long to wait for a reboot approval.')
param hotpatchApprovalTimeout string = '24h'

@description('HOTPATCH_ENABLE_POLL_INTERVAL: enablement status poll interval.')
param hotpatchEnablePollInterval string = '2m'

@description('HOTPATCH_REBOOT_POLL_INTERVAL: reboot status poll interval.')
param hotpatchRebootPollInterval string = '1m'

@description('HOTPATCH_RUN_COMMAND_TIMEOUT: how long one Run Command may run.')
param hotpatchRunCommandTimeout string = '10m'

@description('HOTPATCH_DISCONNECTED_GRACE: how long after a Disconnected read a machine is read again before it is skipped.')
param hotpatchDisconnectedGrace string = '10m'

@minValue(1)
@description('HOTPATCH_RUN_COMMAND_ATTEMPTS: attempts for a failing Run Command.')
param hotpatchRunCommandAttempts int = 3

@description('HOTPATCH_MAINTENANCE_WINDOW: weekly reboot window in UTC for reboot policy "window", e.g. "Sat,Sun 02:00-06:00".')
param hotpatchMaintenanceWindow string = 'Sun 02:00-06:00'

@secure()
@description('HOTPATCH_ESCALATION_WEBHOOK: URL that receives a JSON POST per escalation; empty: none.')
param hotpatchEscalationWebhook string = ''

@description('HOTPATCH_SCHEDULE: NCRONTAB schedule (UTC) of the whole-fleet rollout.')
param hotpatchSchedule string = '0 0 3 * * Sun'

@description('HOTPATCH_INSTALL_SCHEDULE: NCRONTAB schedule of the whole fleet\'s hotpatch installation; empty: off (the timer function is disabled).')
param hotpatchInstallSchedule string = ''

@description('HOTPATCH_RESOURCE_GROUP: limit discovery to one resource group; empty: whole subscriptions.')
param hotpatchResourceGroup string = ''

@allowed([
  'AzureCloud'
  'AzureUSGovernment'
  'AzureChinaCloud'
])
@description('HOTPATCH_CLOUD: Azure cloud of the Arc machines; default: the cloud deployed to.')
param hotpatchCloud string = environment().name

@description('HOTPATCH_ARM_ENDPOINT: ARM endpoint, overriding the cloud\'s; empty: the cloud\'s.')
param hotpatchArmEndpoint string = ''

@description('HOTPATCH_BASELINES_FILE: extra JSON file of Hotpatch baselines (path in the deployed package); empty: none.')
param hotpatchBaselinesFile string = ''

@allowed([
  'auto'
  'true'
  'false'
])
@description('HOTPATCH_ASSESS_PATCHES: run Update Manager\'s patch assessment for the next-update forecast: auto (dry runs only), true or false.')
param hotpatchAssessPatches string = 'auto'

// ---------------------------------------------------------------- names

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-hotpatch-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var eventGridFunctionName = 'on_arc_machine_written'
var roleDefinitionGuid = guid(subscription().id, environmentName, 'arc-hotpatch-orchestrator-role')

// Target subscriptions: both parameters, trimmed, lower-cased, without duplicates.
var csvTargets = filter(map(split(targetSubscriptionIdsCsv, ','), id => toLower(trim(id))), id => !empty(id))
var listedTargets = union(map(targetSubscriptionIds, id => toLower(trim(string(id)))), csvTargets)
var targets = empty(listedTargets)
  ? [
      subscription().subscriptionId
    ]
  : listedTargets

// ---------------------------------------------------------------- the app

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'hotpatch-identity'
  scope: rg
  params: {
    name: 'id-hotpatch-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'hotpatch-monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-hotpatch-${resourceToken}'
    applicationInsightsName: 'appi-hotpatch-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    principalId: identity.outputs.principalId
  }
}

module storage 'app/storage.bicep' = {
  name: 'hotpatch-storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    principalId: identity.outputs.principalId
  }
}

module scheduler 'app/durable-task-scheduler.bicep' = if (durableTaskSchedulerEnabled) {
  name: 'hotpatch-durable-task-scheduler'
  scope: rg
  params: {
    name: 'dts-hotpatch-${resourceToken}'
    location: durableTaskSchedulerLocation
    tags: tags
    taskHubName: hotpatchTaskHub
    skuName: durableTaskSchedulerSku
    skuCapacity: durableTaskSchedulerCapacity
    ipAllowlist: durableTaskSchedulerIpAllowlist
    principalId: identity.outputs.principalId
  }
}

// The app's policy (SPEC section 4) and its Durable Functions task hub.
var hotpatchAppSettings = {
  HOTPATCH_TASK_HUB: hotpatchTaskHub
  HOTPATCH_REBOOT_POLICY: hotpatchRebootPolicy
  HOTPATCH_WORKAROUND_MODE: hotpatchWorkaroundMode
  HOTPATCH_DRY_RUN: hotpatchDryRun ? 'true' : 'false'
  HOTPATCH_EXCLUDE_TAG: hotpatchExcludeTag
  HOTPATCH_CONCURRENCY: string(hotpatchConcurrency)
  HOTPATCH_WAVES: hotpatchWaves
  HOTPATCH_GUARDRAIL: hotpatchGuardrail
  HOTPATCH_ENABLE_TIMEOUT: hotpatchEnableTimeout
  HOTPATCH_REBOOT_TIMEOUT: hotpatchRebootTimeout
  HOTPATCH_APPROVAL_TIMEOUT: hotpatchApprovalTimeout
  HOTPATCH_ENABLE_POLL_INTERVAL: hotpatchEnablePollInterval
  HOTPATCH_REBOOT_POLL_INTERVAL: hotpatchRebootPollInterval
  HOTPATCH_RUN_COMMAND_TIMEOUT: hotpatchRunCommandTimeout
  HOTPATCH_DISCONNECTED_GRACE: hotpatchDisconnectedGrace
  HOTPATCH_RUN_COMMAND_ATTEMPTS: string(hotpatchRunCommandAttempts)
  HOTPATCH_MAINTENANCE_WINDOW: hotpatchMaintenanceWindow
  HOTPATCH_ESCALATION_WEBHOOK: hotpatchEscalationWebhook
  HOTPATCH_SCHEDULE: hotpatchSchedule
  // The timer's binding reads HOTPATCH_INSTALL_TIMER, which must be a valid schedule for the function to be
  // indexed: without a schedule, a placeholder, and the function is disabled (the policy's setting stays empty).
  HOTPATCH_INSTALL_SCHEDULE: hotpatchInstallSchedule
  HOTPATCH_INSTALL_TIMER: empty(hotpatchInstallSchedule) ? '0 0 4 * * Wed' : hotpatchInstallSchedule
  'AzureWebJobs.scheduled_hotpatch_install.Disabled': empty(hotpatchInstallSchedule) ? 'true' : 'false'
  HOTPATCH_SUBSCRIPTIONS: discoverAllReadableSubscriptions ? '' : join(targets, ',')
  HOTPATCH_RESOURCE_GROUP: hotpatchResourceGroup
  HOTPATCH_CLOUD: hotpatchCloud
  HOTPATCH_ARM_ENDPOINT: hotpatchArmEndpoint
  HOTPATCH_BASELINES_FILE: hotpatchBaselinesFile
  HOTPATCH_ASSESS_PATCHES: hotpatchAssessPatches
}

// With the Durable Task Scheduler backend: its connection, through the same identity.
var durableBackendSettings = durableTaskSchedulerEnabled
  ? {
      DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${scheduler.outputs.endpoint};Authentication=ManagedIdentity;ClientID=${identity.outputs.clientId}'
    }
  : {}

module api 'app/function-app.bicep' = {
  name: 'hotpatch-function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-hotpatch-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    appSettings: union(hotpatchAppSettings, durableBackendSettings)
  }
}

// ---------------------------------------------------------------- target subscriptions

// One custom role for the deployment, defined in this subscription and assignable on
// every target subscription (its actions: infra/rbac/hotpatch-role.json).
module hotpatchRole 'rbac/role-definition.bicep' = if (subscriptionRoleAssignmentsEnabled) {
  name: take('hotpatch-role-definition-${environmentName}', 64)
  params: {
    roleDefinitionGuid: roleDefinitionGuid
    roleName: customRoleName
    assignableScopes: union(
      [
        subscription().id
      ],
      map(targets, id => '/subscriptions/${id}')
    )
  }
}

module targetSubscriptions 'target/target-subscription.bicep' = [
  for (id, i) in targets: {
    name: take('hotpatch-target-${environmentName}-${i}', 64)
    scope: subscription(id)
    params: {
      location: location
      tags: tags
      principalId: identity.outputs.principalId
      assignRole: subscriptionRoleAssignmentsEnabled
      roleDefinitionGuid: roleDefinitionGuid
      eventsResourceGroupName: eventsResourceGroupName
      systemTopicName: 'evgt-hotpatch-${resourceToken}'
      existingSystemTopic: contains(existingSubscriptionSystemTopics, id) ? existingSubscriptionSystemTopics[id] : {}
      createEventSubscription: eventSubscriptionsEnabled
      functionAppResourceId: api.outputs.id
      functionName: eventGridFunctionName
    }
    dependsOn: [
      hotpatchRole
    ]
  }
]

// ---------------------------------------------------------------- outputs (azd stores them in the environment)

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_ID string = api.outputs.id
output AZURE_FUNCTION_APP_URL string = 'https://${api.outputs.defaultHostName}'
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output APP_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output APP_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output CUSTOM_ROLE_DEFINITION_ID string = subscriptionRoleAssignmentsEnabled ? hotpatchRole.outputs.id : ''
output TARGET_SUBSCRIPTIONS string = join(targets, ',')
output EVENT_GRID_FUNCTION_NAME string = eventGridFunctionName
output EVENT_GRID_SYSTEM_TOPICS array = [for (id, i) in targets: targetSubscriptions[i].outputs.systemTopic]
output DURABLE_TASK_SCHEDULER_ENDPOINT string = durableTaskSchedulerEnabled ? scheduler.outputs.endpoint : ''
output DURABLE_TASK_SCHEDULER_DASHBOARD_URL string = durableTaskSchedulerEnabled ? scheduler.outputs.dashboardUrl : ''
