// The Azure Monitor workbook "Checkpoint deletions" on the Application Insights component: its
// content is infra/workbook.json (the workbook's serializedData document, {"version":
// "Notebook/1.0", "items": [...]}), loaded as text at compile time. Shared (visible to everyone
// who can read the resource group) and linked to the component by sourceId, so it is listed
// under the component's Workbooks and its queries run against that component.
// docs/observability.md, "The workbook and the alerts", describes each chart and its KQL.

param applicationInsightsName string
param location string = resourceGroup().location
param tags object = {}

@description('Title of the workbook in the portal.')
param displayName string = 'Checkpoint deletions'

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name is a GUID: this one stays the same across deployments of the component.
  name: guid(applicationInsights.id, 'checkpoint-deletions-workbook')
  location: location
  // The portal shows a workbook under its hidden-title tag.
  tags: union(tags, {
    'hidden-title': displayName
  })
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    version: 'Notebook/1.0'
    // The portal matches a workbook to its resource by the lower-case id.
    sourceId: toLower(applicationInsights.id)
    serializedData: loadTextContent('../workbook.json')
  }
}

output id string = workbook.id
output name string = workbook.name
