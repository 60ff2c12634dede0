// The app's custom role: exactly the ARM actions its activities declare
// (hotpatch-role.json, checked against activities/permissions.py by tests/infra).
// One definition for the whole deployment, assignable on every target subscription.

targetScope = 'subscription'

@description('Name (GUID) of the role definition; stable per azd environment.')
param roleDefinitionGuid string

@description('Display name of the role; unique in the tenant.')
param roleName string

@description('Scopes the role may be assigned at: /subscriptions/<id> of every target subscription.')
param assignableScopes array

var role = loadJsonContent('hotpatch-role.json')

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
    assignableScopes: assignableScopes
  }
}

output id string = hotpatchRole.id
output roleDefinitionGuid string = hotpatchRole.name
