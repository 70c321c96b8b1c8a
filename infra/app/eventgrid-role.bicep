// Optional: lets the app identity publish to an existing Event Grid custom topic (deployed to the
// topic's resource group). Returns the topic endpoint for EVENTGRID_TOPIC_ENDPOINT.

param topicName string
param principalId string

@description('EventGrid Data Sender (d5a91429-5739-47e2-a06b-3470a27159e7).')
param roleDefinitionId string

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

resource dataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, principalId, roleDefinitionId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Checkpoint deletion app: publish outcome events'
  }
}

output endpoint string = topic.properties.endpoint
