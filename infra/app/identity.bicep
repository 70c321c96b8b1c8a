// The user-assigned managed identity the function app uses for everything: host storage
// (AzureWebJobsStorage__*), the app's queues, the deployment package container, Application
// Insights ingestion and the ARM calls (AZURE_CLIENT_ID).

param name string
param location string = resourceGroup().location
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
