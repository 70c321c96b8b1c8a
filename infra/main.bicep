// Azure deployment of the SCVMM checkpoint-deletion function app (azd layout, subscription scope).
//
// Creates one resource group with: a user-assigned managed identity (used for everything), a
// storage account without shared-key access (host storage, deployment package container, the
// app's four queues and its table of VM turns), Log Analytics + Application Insights (local auth
// disabled) and a Flex Consumption (FC1) Linux function app running Python. Grants the identity the data-plane roles it
// needs on storage and App Insights, and "Azure Arc ScVmm VM Contributor" (or, with scvmmCustomRole, a
// custom role with exactly the actions the app uses) on the resource group (or subscription) that
// holds the Arc-enabled SCVMM machines. No keys or connection strings are read. On the Application
// Insights component: the workbook "Checkpoint deletions" (infra/workbook.json) and three log alert
// rules (failure rate, poisoned requests, oldest operation); docs/observability.md describes them.
//
// Deploy with `azd up` (parameters come from main.parameters.json and the azd environment) or with
// `az deployment sub create --location <region> --template-file infra/main.bicep --parameters ...`.
// See docs/deploy.md.

targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd: AZURE_ENV_NAME); used in the resource group name and to derive unique resource names.')
param environmentName string

@minLength(1)
@description('Region for all resources. It must offer the Flex Consumption plan: az functionapp list-flexconsumption-locations -o table')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse; empty = rg-<environmentName>.')
param resourceGroupName string = ''

@description('Function app name (globally unique); empty = func-api-<token>.')
param functionAppName string = ''

@maxLength(24)
@description('Storage account name (3-24 lowercase letters and digits, globally unique); empty = st<token>.')
param storageAccountName string = ''

@description('Object id of a user or service principal that may put and read queue messages (azd fills AZURE_PRINCIPAL_ID with the signed-in user). Empty = no such role assignment.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principal principalId names.')
param principalType string = 'User'

// ---------------------------------------------------------------------------------------------
// Access to Azure Resource Manager (the SCVMM machines)
// ---------------------------------------------------------------------------------------------

@allowed([
  'resourceGroup'
  'subscription'
])
@description('Where "Azure Arc ScVmm VM Contributor" is assigned to the app identity: the resource group scvmmResourceGroupName (narrowest), or the whole subscription.')
param scvmmRoleScope string = 'resourceGroup'

@description('Resource group holding the Arc-enabled SCVMM machines (Microsoft.HybridCompute/machines) whose checkpoints are deleted. Required when scvmmRoleScope is resourceGroup; it must already exist.')
param scvmmResourceGroupName string = ''

@description('Subscription of those machines; empty = the deployment subscription.')
param scvmmSubscriptionId string = ''

@description('Instead of "Azure Arc ScVmm VM Contributor", give the identity a custom role with exactly Microsoft.ScVmm/virtualMachineInstances/deleteCheckpoint/action, Microsoft.ScVmm/virtualMachineInstances/read and Microsoft.ScVmm/locations/operationstatuses/read (which the built-in role lacks), defined in the SCVMM subscription and assigned at scvmmRoleScope. Creating it needs Owner or User Access Administrator on that subscription.')
param scvmmCustomRole bool = false

@description('Name of that custom role (unique in the tenant); empty = "Arc SCVMM checkpoint deletion (<function app name>)".')
param scvmmCustomRoleName string = ''

@description('ARM_ENDPOINT: ARM base URL (https). Empty = the resource manager of the cloud deployed to (environment().resourceManager, e.g. https://management.azure.com).')
param armEndpoint string = ''

@description('ARM_API_VERSION: api-version sent to Microsoft.ScVmm.')
param armApiVersion string = '2024-06-01'

// ---------------------------------------------------------------------------------------------
// App behaviour (contract section 2)
// ---------------------------------------------------------------------------------------------

@minLength(3)
@maxLength(56) // so that '<name>-poison' is still a valid queue name (63 characters at most)
@description('CHECKPOINT_REQUESTS_QUEUE: where producers put deletion requests. Its poison queue <name>-poison is created too.')
param requestsQueueName string = 'checkpoint-delete-requests'

@minLength(3)
@maxLength(63)
@description('CHECKPOINT_TRACKING_QUEUE: pending operations, one message each.')
param trackingQueueName string = 'checkpoint-delete-tracking'

@minLength(3)
@maxLength(52) // so that '<name>-outbox' and '<name>-deadletter' are still valid queue names
@description('CHECKPOINT_EVENTS_QUEUE: where outcome events (CloudEvents JSON) go. With Event Grid, its outbox queue <name>-outbox and dead-letter queue <name>-deadletter are created too.')
param eventsQueueName string = 'checkpoint-delete-events'

@minLength(3)
@maxLength(63)
@description('CHECKPOINT_TURNS_TABLE: the table that keeps one operation per VM at a time and retention policy runs (3-63 letters and digits, a letter first); created by the app if missing, and by this template.')
param turnsTableName string = 'checkpointturns'

@description('POLL_SCHEDULE: NCRONTAB (six fields, seconds first, UTC) of the polling timer. Empty = every 15 seconds.')
param pollSchedule string = '*/15 * * * * *'

@minValue(1)
@description('OPERATION_TIMEOUT_SECONDS: an operation still running this long after submission fails with OperationTimedOut.')
param operationTimeoutSeconds int = 86400

@description('AZURE_SDK_HTTP_LOGGING: true logs every storage and Event Grid request the Azure SDK makes (Information, shipped to Application Insights); false keeps them out.')
param sdkHttpLogging bool = false

@minValue(1)
@description('POLL_FAILURE_WINDOW_SECONDS: a tracked operation whose status reads met nothing but transient failures this long fails with RetriesExhausted.')
param pollFailureWindowSeconds int = 3600

@description('EVENTGRID_TOPIC_ENDPOINT: Event Grid custom topic endpoint that every event is also published to. Empty = taken from eventGridTopicResourceId when that is given, else unset (queue only).')
param eventGridTopicEndpoint string = ''

@description('Resource id of that Event Grid custom topic (Microsoft.EventGrid/topics). When given, the identity gets "EventGrid Data Sender" on it. Empty = no role assignment.')
param eventGridTopicResourceId string = ''

// ---------------------------------------------------------------------------------------------
// Alerts (app/alerts.bicep; docs/observability.md, "The workbook and the alerts")
// ---------------------------------------------------------------------------------------------

@description('Whether the three log alert rules run (they are created in any case, disabled when false).')
param alertsEnabled bool = true

@description('Resource id of an existing action group (Microsoft.Insights/actionGroups) the alerts notify; empty = none (alerts show in the portal only).')
param alertActionGroupId string = ''

@allowed([
  'PT1M'
  'PT5M'
  'PT10M'
  'PT15M'
  'PT30M'
  'PT45M'
  'PT1H'
])
@description('How often each alert rule runs its query.')
param alertEvaluationFrequency string = 'PT5M'

@minValue(1)
@maxValue(100)
@description('Failure rate alert: more than this percentage of the terminal events in the window are Failed.')
param alertFailureRatePercent int = 10

@minValue(1)
@description('Failure rate alert: a window with fewer terminal events than this is not judged.')
param alertFailureRateMinimumRequests int = 5

@allowed([
  'PT5M'
  'PT10M'
  'PT15M'
  'PT30M'
  'PT45M'
  'PT1H'
  'PT2H'
  'PT3H'
  'PT6H'
  'PT12H'
  'P1D'
])
@description('Failure rate alert: the window (at least alertEvaluationFrequency).')
param alertFailureRateWindow string = 'PT1H'

@minValue(0)
@maxValue(4)
@description('Failure rate alert: severity (0 critical .. 4 verbose).')
param alertFailureRateSeverity int = 2

@minValue(0)
@description('Poisoned requests alert: more requests than this landed in the poison queue in the window.')
param alertPoisonedRequestsThreshold int = 0

@allowed([
  'PT5M'
  'PT10M'
  'PT15M'
  'PT30M'
  'PT45M'
  'PT1H'
  'PT2H'
  'PT3H'
  'PT6H'
  'PT12H'
  'P1D'
])
@description('Poisoned requests alert: the window (at least alertEvaluationFrequency).')
param alertPoisonedRequestsWindow string = 'PT15M'

@minValue(0)
@maxValue(4)
@description('Poisoned requests alert: severity.')
param alertPoisonedRequestsSeverity int = 1

@minValue(1)
@description('Oldest operation alert: an operation still tracked is older than this many seconds.')
param alertOldestOperationSeconds int = 3600

@allowed([
  'PT5M'
  'PT10M'
  'PT15M'
  'PT30M'
  'PT45M'
  'PT1H'
  'PT2H'
  'PT3H'
  'PT6H'
  'PT12H'
  'P1D'
])
@description('Oldest operation alert: the window (at least alertEvaluationFrequency).')
param alertOldestOperationWindow string = 'PT15M'

@minValue(0)
@maxValue(4)
@description('Oldest operation alert: severity.')
param alertOldestOperationSeverity int = 2

// ---------------------------------------------------------------------------------------------
// Hosting
// ---------------------------------------------------------------------------------------------

@allowed([
  '3.11'
  '3.12'
])
@description('Python version of the Flex Consumption runtime.')
param pythonVersion string = '3.11'

@minValue(40) // this template's floor (the plan itself now accepts values down to 1)
@maxValue(1000)
@description('Most instances each per-function scale group may scale out to. The work is a trickle of ARM calls that ARM throttles per principal, so the lowest allowed value is plenty.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance in MB.')
param instanceMemoryMB int = 2048

// ---------------------------------------------------------------------------------------------
// Names and derived values
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var apiTags = union(tags, {
  'azd-service-name': 'api'
})

var appName = !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = toLower('app-package-${take(appName, 32)}-${take(resourceToken, 7)}')

// The app reads ARM_ENDPOINT without a trailing slash; environment().resourceManager has one.
var armEndpointRaw = !empty(armEndpoint) ? armEndpoint : environment().resourceManager
var armEndpointValue = endsWith(armEndpointRaw, '/') ? substring(armEndpointRaw, 0, length(armEndpointRaw) - 1) : armEndpointRaw
var pollScheduleValue = !empty(pollSchedule) ? pollSchedule : '*/15 * * * * *'

var poisonQueueName = '${requestsQueueName}-poison'
var queueNames = [
  requestsQueueName
  poisonQueueName
  trackingQueueName
  eventsQueueName
]
// With Event Grid, events the topic did not take wait in '<events queue>-outbox' for the next poll.
var eventGridEnabled = !empty(eventGridTopicEndpoint) || !empty(eventGridTopicResourceId)
var outboxQueueName = '${eventsQueueName}-outbox'
var outboxQueueNames = [
  outboxQueueName
  '${eventsQueueName}-deadletter'
]
var allQueueNames = eventGridEnabled ? concat(queueNames, outboxQueueNames) : queueNames

// Built-in role definitions assigned here (ids are the same in every cloud).
var scvmmVmContributorRoleId = 'e582369a-e17b-42a5-b10c-874c387c530b' // Azure Arc ScVmm VM Contributor
var eventGridDataSenderRoleId = 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender

var scvmmSubscription = !empty(scvmmSubscriptionId) ? scvmmSubscriptionId : subscription().subscriptionId
// An empty name would give an obscure ARM error; this one names the missing parameter instead.
var scvmmResourceGroup = !empty(scvmmResourceGroupName) ? scvmmResourceGroupName : 'set-scvmmResourceGroupName-or-use-scvmmRoleScope-subscription'
var scvmmCustomRoleNameValue = !empty(scvmmCustomRoleName) ? scvmmCustomRoleName : 'Arc SCVMM checkpoint deletion (${appName})'
var scvmmRoleScopeId = scvmmRoleScope == 'subscription' ? '/subscriptions/${scvmmSubscription}' : '/subscriptions/${scvmmSubscription}/resourceGroups/${scvmmResourceGroup}'

// /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.EventGrid/topics/{name}
var topicIdOrPlaceholder = !empty(eventGridTopicResourceId) ? eventGridTopicResourceId : '/subscriptions/none/resourceGroups/none/providers/Microsoft.EventGrid/topics/none'
var topicIdParts = split(topicIdOrPlaceholder, '/')

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    queueNames: allQueueNames
    tableNames: [
      turnsTableName
    ]
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

// With scvmmCustomRole: a custom role with exactly the actions the app uses, defined in the SCVMM
// subscription (app/scvmm-role-definition.bicep).
module scvmmCustomRoleDefinition 'app/scvmm-role-definition.bicep' = if (scvmmCustomRole) {
  name: 'scvmm-role-definition-${resourceToken}'
  scope: subscription(scvmmSubscription)
  params: {
    roleName: scvmmCustomRoleNameValue
  }
}

var scvmmRoleDefinitionId = scvmmCustomRole ? scvmmCustomRoleDefinition.outputs.roleDefinitionId : scvmmVmContributorRoleId

// "Azure Arc ScVmm VM Contributor" for the app identity (or the custom role above): it holds
// Microsoft.ScVmm/virtualMachineInstances/* (deleteCheckpoint/action and read among them) but not
// Microsoft.ScVmm/locations/operationstatuses/read; when a status URL answers 401/403 the app
// follows the VM instance instead (docs/deploy.md). Deployed at the narrowest scope chosen.
module scvmmRoleResourceGroup 'app/role-assignment-rg.bicep' = if (scvmmRoleScope == 'resourceGroup') {
  name: 'scvmm-role-rg-${resourceToken}'
  scope: resourceGroup(scvmmSubscription, scvmmResourceGroup)
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionId: scvmmRoleDefinitionId
    assignmentDescription: 'Checkpoint deletion function app ${appName}: deleteCheckpoint and operation status on Arc SCVMM VM instances'
  }
}

module scvmmRoleSubscription 'app/role-assignment-subscription.bicep' = if (scvmmRoleScope == 'subscription') {
  name: 'scvmm-role-sub-${resourceToken}'
  scope: subscription(scvmmSubscription)
  params: {
    principalId: identity.outputs.principalId
    roleDefinitionId: scvmmRoleDefinitionId
    assignmentDescription: 'Checkpoint deletion function app ${appName}: deleteCheckpoint and operation status on Arc SCVMM VM instances'
  }
}

// Optional Event Grid custom topic: "EventGrid Data Sender" on the topic itself.
module eventGridRole 'app/eventgrid-role.bicep' = if (!empty(eventGridTopicResourceId)) {
  name: 'eventgrid-role-${resourceToken}'
  scope: resourceGroup(topicIdParts[2], topicIdParts[4])
  params: {
    topicName: topicIdParts[8]
    principalId: identity.outputs.principalId
    roleDefinitionId: eventGridDataSenderRoleId
  }
}

var eventGridEndpointValue = !empty(eventGridTopicEndpoint) ? eventGridTopicEndpoint : (!empty(eventGridTopicResourceId) ? eventGridRole.outputs.endpoint : '')

module api 'app/function.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: appName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: apiTags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    pythonVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    requestsQueueName: requestsQueueName
    trackingQueueName: trackingQueueName
    eventsQueueName: eventsQueueName
    turnsTableName: turnsTableName
    armEndpoint: armEndpointValue
    armApiVersion: armApiVersion
    pollSchedule: pollScheduleValue
    operationTimeoutSeconds: operationTimeoutSeconds
    pollFailureWindowSeconds: pollFailureWindowSeconds
    sdkHttpLogging: sdkHttpLogging
    eventGridTopicEndpoint: eventGridEndpointValue
  }
  // The host starts as soon as the site exists: let it find its roles already in place.
  dependsOn: [
    rbac
  ]
}

// The workbook "Checkpoint deletions" and the alert rules, on the Application Insights component.
module workbook 'app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
    namePrefix: appName
    enabled: alertsEnabled
    actionGroupId: alertActionGroupId
    evaluationFrequency: alertEvaluationFrequency
    failureRateThresholdPercent: alertFailureRatePercent
    failureRateMinimumRequests: alertFailureRateMinimumRequests
    failureRateWindowSize: alertFailureRateWindow
    failureRateSeverity: alertFailureRateSeverity
    poisonedRequestsThreshold: alertPoisonedRequestsThreshold
    poisonedRequestsWindowSize: alertPoisonedRequestsWindow
    poisonedRequestsSeverity: alertPoisonedRequestsSeverity
    oldestOperationAgeSeconds: alertOldestOperationSeconds
    oldestOperationWindowSize: alertOldestOperationWindow
    oldestOperationSeverity: alertOldestOperationSeverity
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in .azure/<env>/.env)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output AZURE_MANAGED_IDENTITY_NAME string = identity.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output CHECKPOINT_REQUESTS_QUEUE string = requestsQueueName
output CHECKPOINT_POISON_QUEUE string = poisonQueueName
output CHECKPOINT_TRACKING_QUEUE string = trackingQueueName
output CHECKPOINT_EVENTS_QUEUE string = eventsQueueName
output CHECKPOINT_TURNS_TABLE string = turnsTableName
output ARM_ENDPOINT string = armEndpointValue
output SCVMM_ROLE_ASSIGNMENT_SCOPE string = scvmmRoleScopeId
output SCVMM_ROLE_DEFINITION_ID string = scvmmRoleDefinitionId
output AZURE_MONITOR_WORKBOOK_ID string = workbook.outputs.id
