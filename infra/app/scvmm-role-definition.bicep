// A custom role with exactly the Microsoft.ScVmm actions the app uses, defined in (and assignable
// within) the subscription this module is deployed to: the SCVMM machines' subscription.
//
// - deleteCheckpoint/action: the POST .../virtualMachineInstances/default/deleteCheckpoint;
// - virtualMachineInstances/read: verification reads of the VM instance (and following it when a
//   status URL answers 401/403);
// - locations/operationstatuses/read: reading the operation's status URL. The provider lists this
//   action and no locations/operationresults/read ("Azure built-in roles for Azure Arc-enabled
//   SCVMM", the provider's actions under "Azure Arc ScVmm Administrator role"); the built-in
//   "Azure Arc ScVmm VM Contributor" has virtualMachineInstances/* but not this one.
//
// Creating a role definition needs Microsoft.Authorization/roleDefinitions/write on the
// subscription (Owner or User Access Administrator): main.bicep deploys this only when
// scvmmCustomRole is true. docs/deploy.md, "A custom role for the SCVMM machines".

targetScope = 'subscription'

@description('Role name, unique in the tenant.')
param roleName string

var actions = [
  'Microsoft.ScVmm/virtualMachineInstances/deleteCheckpoint/action'
  'Microsoft.ScVmm/virtualMachineInstances/read'
  'Microsoft.ScVmm/locations/operationstatuses/read'
]

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'checkpoint-deletion-scvmm-role', roleName)
  properties: {
    roleName: roleName
    description: 'Delete checkpoints of Arc-enabled SCVMM VM instances, read the instances and the operations\' statuses (checkpoint deletion function app).'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: actions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

@description('The role definition\'s GUID (its name), as the role assignment modules take it.')
output roleDefinitionId string = role.name
output id string = role.id
