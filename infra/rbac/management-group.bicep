// Optional alternative to one role assignment per target subscription: the same
// custom role defined and assigned once at a management group, so that every
// subscription below it (including ones created later) is covered.
//
//   az deployment mg create --management-group-id <mg> --location <region> \
//     --template-file infra/rbac/management-group.bicep \
//     --parameters principalId=<APP_IDENTITY_PRINCIPAL_ID> roleName='Arc Hotpatch Orchestrator (<env>)'
//
// Then provision main.bicep with subscriptionRoleAssignmentsEnabled=false (and, to
// let scheduled rollouts discover new subscriptions, discoverAllReadableSubscriptions=true).

targetScope = 'managementGroup'

@description('Principal (object) id of the app\'s managed identity (output APP_IDENTITY_PRINCIPAL_ID of main.bicep).')
param principalId string

@description('Display name of the role; unique in the tenant.')
param roleName string = 'Arc Hotpatch Orchestrator (management group)'

var role = loadJsonContent('hotpatch-role.json')
var roleDefinitionGuid = guid(managementGroup().id, roleName)

resource hotpatchRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleDefinitionGuid
  properties: {
    roleName: roleName
    description: role.description
    type: 'CustomRole'
    permissions: [
      {
        actions: role.actions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      managementGroup().id
    ]
  }
}

resource hotpatchRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, roleDefinitionGuid)
  properties: {
    roleDefinitionId: hotpatchRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Arc Hotpatch Orchestrator: least-privilege access to the Arc machines below this management group.'
  }
}

output roleDefinitionId string = hotpatchRole.id
