// One role assignment at the scope of the subscription this module is deployed to.

targetScope = 'subscription'

param principalId string

@description('Role definition id (a GUID): a built-in role, or a custom role defined in this subscription.')
param roleDefinitionId string

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'ServicePrincipal'

@description('Shown with the assignment in the portal.')
param assignmentDescription string = ''

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
    principalId: principalId
    principalType: principalType
    description: assignmentDescription
  }
}

output id string = assignment.id
output scope string = subscription().id
