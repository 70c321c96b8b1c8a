// Flex Consumption (FC1) plan and the Linux Python function app.
//
// siteConfig.appSettings below is the complete list of settings the app reads (contract section 2,
// shared/settings.py SETTING_NAMES), with AzureWebJobsStorage replaced by its identity-based
// family. tests/test_infra.py reads this list: keep every entry a literal `name` and a `value`.
// Flex Consumption takes the runtime from functionAppConfig, so FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE and WEBSITE_CONTENT* are not set.

param name string
param planName string
param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

param pythonVersion string = '3.11'
param maximumInstanceCount int = 40
param instanceMemoryMB int = 2048

// The app's own settings
param requestsQueueName string
param trackingQueueName string
param eventsQueueName string
param turnsTableName string
param armEndpoint string
param armApiVersion string
param pollSchedule string
param operationTimeoutSeconds int
param pollFailureWindowSeconds int
param sdkHttpLogging bool = false
param eventGridTopicEndpoint string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
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
    reserved: true // Linux
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
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
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        // Functions host storage, identity-based (no connection string): the queue triggers and
        // the app's queue clients use the queue service, the host uses blob for leases and the
        // timer's schedule status, the app keeps its VM turns and policy runs in a table.
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        // The account name too, next to the service URIs, as the Azure-Samples Flex Consumption
        // templates set it.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // Telemetry: the connection string only says where to send (local auth is disabled on
        // the component); ingestion is authorized with the identity's Microsoft Entra token.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // The app (contract section 2)
        {
          name: 'CHECKPOINT_REQUESTS_QUEUE'
          value: requestsQueueName
        }
        {
          name: 'CHECKPOINT_TRACKING_QUEUE'
          value: trackingQueueName
        }
        {
          name: 'CHECKPOINT_EVENTS_QUEUE'
          value: eventsQueueName
        }
        {
          name: 'CHECKPOINT_TURNS_TABLE'
          value: turnsTableName
        }
        {
          name: 'ARM_ENDPOINT'
          value: armEndpoint
        }
        {
          name: 'ARM_API_VERSION'
          value: armApiVersion
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'POLL_SCHEDULE'
          value: pollSchedule
        }
        {
          name: 'OPERATION_TIMEOUT_SECONDS'
          value: string(operationTimeoutSeconds)
        }
        {
          name: 'POLL_FAILURE_WINDOW_SECONDS'
          value: string(pollFailureWindowSeconds)
        }
        {
          name: 'AZURE_SDK_HTTP_LOGGING'
          value: sdkHttpLogging ? 'true' : 'false'
        }
        {
          name: 'EVENTGRID_TOPIC_ENDPOINT'
          value: eventGridTopicEndpoint
        }
      ]
    }
  }
}

output name string = functionApp.name
output id string = functionApp.id
output defaultHostName string = functionApp.properties.defaultHostName
