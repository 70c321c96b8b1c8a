// Optional: deliver deletion requests published to an Event Grid custom topic onto the app's
// requests queue. Producers publish one event per request whose data is the request object
// (schemas/deletion-request.schema.json, sample: request-eventgrid.json or request-cloudevent.json);
// Event Grid writes each event to the queue (base64 text, which the app decodes) and the app reads
// the event's data as the request, and the event's id as the requestId when data has none.
//
// Deploy to the resource group that holds both the topic and the app's storage account:
//   az deployment group create -g <rg> --template-file examples/eventgrid-subscription.bicep \
//     --parameters topicName=<topic> storageAccountName=<AZURE_STORAGE_ACCOUNT_NAME> \
//                  deliveryIdentityResourceId=<identity resource id> deliveryIdentityPrincipalId=<its object id>
//
// Before deploying:
// - the user-assigned identity must already be assigned to the topic (topic `identity.type`
//   'UserAssigned' with it in `userAssignedIdentities`): Event Grid delivers with an identity of the
//   topic only;
// - delivery with a user-assigned identity needs a storage account without firewall or virtual
//   network rules (the template in infra/ leaves the account open, Entra ID auth only); behind a
//   firewall, Event Grid can deliver only with the topic's system-assigned identity and the
//   trusted-services exception;
// - the app's storage account accepts no keys, which is why delivery uses an identity at all.
//
// The identity gets "Storage Queue Data Message Sender" on the requests queue only (set
// assignQueueSenderRole=false if you assign it yourself, e.g. when the storage account is in another
// resource group). New role assignments can take minutes to apply; Event Grid retries delivery
// meanwhile (retryPolicy below).
//
// This file is an example: it is not part of infra/main.bicep and not deployed by azd.

targetScope = 'resourceGroup'

@description('Existing Event Grid custom topic (this resource group) that producers publish deletion requests to.')
param topicName string

@description('Resource id of the user-assigned managed identity, already assigned to the topic, that Event Grid delivers with.')
param deliveryIdentityResourceId string

@description('Principal (object) id of that identity, for the role assignment on the queue.')
param deliveryIdentityPrincipalId string

@description('The app\'s storage account (AZURE_STORAGE_ACCOUNT_NAME), in this resource group.')
param storageAccountName string

@minLength(3)
@maxLength(63)
@description('CHECKPOINT_REQUESTS_QUEUE of the app.')
param requestsQueueName string = 'checkpoint-delete-requests'

@description('Name of the event subscription.')
param eventSubscriptionName string = 'checkpoint-delete-requests'

@description('Only events of these types are delivered. checkpointctl (--envelope eventgrid|cloudevents) and the samples use ScVmm.CheckpointDelete.Requested.')
param includedEventTypes array = [
  'ScVmm.CheckpointDelete.Requested'
]

@allowed([
  'EventGridSchema'
  'CloudEventSchemaV1_0'
])
@description('Schema of the delivered events; the app reads both. A topic with the CloudEvents input schema can only deliver CloudEventSchemaV1_0.')
param eventDeliverySchema string = 'EventGridSchema'

@description('Seconds a delivered request may wait on the queue before it expires; -1 = never. The default is the queue service\'s own (7 days).')
param queueMessageTimeToLiveInSeconds int = 604800

@description('Assign "Storage Queue Data Message Sender" on the requests queue to the delivery identity.')
param assignQueueSenderRole bool = true

var storageQueueDataMessageSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // Storage Queue Data Message Sender

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource requestsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: requestsQueueName
}

resource queueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignQueueSenderRole) {
  name: guid(requestsQueue.id, deliveryIdentityPrincipalId, storageQueueDataMessageSenderRoleId)
  scope: requestsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSenderRoleId)
    principalId: deliveryIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid topic ${topicName}: deliver checkpoint deletion requests to ${requestsQueueName}'
  }
}

resource requestsSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: eventSubscriptionName
  properties: {
    deliveryWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: deliveryIdentityResourceId
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storage.id
          queueName: requestsQueueName
          queueMessageTimeToLiveInSeconds: queueMessageTimeToLiveInSeconds
        }
      }
    }
    eventDeliverySchema: eventDeliverySchema
    filter: {
      includedEventTypes: includedEventTypes
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
  dependsOn: [
    queueSender
  ]
}

output eventSubscriptionId string = requestsSubscription.id
