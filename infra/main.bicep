// `azd up`: everything the app needs, keyless end to end.
//
// A Flex Consumption function app (Python 3.13 by default) running as a
// user-assigned managed identity. The identity reaches the deployment
// storage, Application Insights and Azure OpenAI through Entra ID roles:
// no account key, connection string with a secret, or API key is created,
// stored in a setting, or output. The structure follows Microsoft's Flex
// Consumption azd quickstarts (Azure-Samples/functions-quickstart-python-http-azd).
//
// Azure OpenAI: by default a new account with one chat deployment. To use
// an existing one instead, set `openAiEndpoint` (and `chatDeploymentName`);
// set `openAiAccountName` and `openAiResourceGroupName` too and the identity
// gets its role there, otherwise grant "Cognitive Services OpenAI User"
// yourself (see the README).
//
// tests/test_infra.py holds these templates to the code: every setting the
// app needs is set, every setting set is one something reads, the roles and
// identity are wired, and nothing key-shaped appears.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; a short hash of it names the resources.')
param environmentName string

@minLength(1)
@description('Region of every resource (Flex Consumption must be available there).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the developer running azd: gets Cognitive Services OpenAI User on Azure OpenAI, for keyless local runs (az login). Empty: none.')
param principalId string = ''

@allowed(['3.11', '3.12', '3.13'])
@description('Python version of the function app.')
param pythonVersion string = '3.13'

@allowed([512, 2048, 4096])
@description('Memory of one Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to.')
param maximumInstanceCount int = 100

@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP requests the platform sends one instance before it scales out. Also the app\'s own MAX_CONCURRENT_RUNS, so the platform scales out before the app refuses a run.')
param httpPerInstanceConcurrency int = 32

@allowed(['function', 'anonymous', 'admin'])
@description('Auth level of the stream endpoints (STREAM_AUTH_LEVEL).')
param streamAuthLevel string = 'function'

@description('Existing Azure OpenAI endpoint (https://<resource>.openai.azure.com). Empty: create an account and a chat deployment.')
param openAiEndpoint string = ''

@description('Existing Azure OpenAI account name, to grant the app\'s identity its role there. Only with openAiEndpoint.')
param openAiAccountName string = ''

@description('Resource group of the existing Azure OpenAI account (same subscription). Only with openAiAccountName.')
param openAiResourceGroupName string = ''

@description('Chat deployment name: the one created, or the existing one to use.')
param chatDeploymentName string = 'chat'

@description('Model of the created chat deployment.')
param chatModelName string = 'gpt-4o-mini'

@description('Version of the created chat deployment\'s model.')
param chatModelVersion string = '2024-07-18'

@description('SKU of the created chat deployment.')
param chatDeploymentSku string = 'GlobalStandard'

@description('Capacity of the created chat deployment, in thousands of tokens per minute.')
param chatDeploymentCapacity int = 30

@description('Region of the created Azure OpenAI account (model availability differs from Flex availability). Empty: location.')
param openAiLocation string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = 'func-api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var createOpenAi = empty(openAiEndpoint)
var grantExistingOpenAi = !createOpenAi && !empty(openAiAccountName) && !empty(openAiResourceGroupName)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module base 'app/base.bicep' = {
  name: 'base'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    deploymentContainerName: deploymentContainerName
  }
}

module openAi 'app/openai.bicep' = if (createOpenAi) {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${resourceToken}'
    location: empty(openAiLocation) ? location : openAiLocation
    tags: tags
    chatDeploymentName: chatDeploymentName
    chatModelName: chatModelName
    chatModelVersion: chatModelVersion
    chatDeploymentSku: chatDeploymentSku
    chatDeploymentCapacity: chatDeploymentCapacity
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: base.outputs.storageAccountName
    applicationInsightsName: base.outputs.applicationInsightsName
    openAiAccountName: createOpenAi ? openAi.outputs.name : ''
    identityPrincipalId: base.outputs.identityPrincipalId
    developerPrincipalId: principalId
  }
}

module existingOpenAiAccess 'app/openai-access.bicep' = if (grantExistingOpenAi) {
  name: 'existing-openai-access'
  scope: resourceGroup(grantExistingOpenAi ? openAiResourceGroupName : rg.name)
  params: {
    openAiAccountName: openAiAccountName
    identityPrincipalId: base.outputs.identityPrincipalId
    developerPrincipalId: principalId
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    planId: base.outputs.planId
    storageAccountName: base.outputs.storageAccountName
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: base.outputs.applicationInsightsName
    identityId: base.outputs.identityId
    identityClientId: base.outputs.identityClientId
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    streamAuthLevel: streamAuthLevel
    openAiEndpoint: createOpenAi ? openAi.outputs.endpoint : openAiEndpoint
    chatDeploymentName: chatDeploymentName
  }
  // The host reads its storage through the identity at start-up: roles first.
  dependsOn: [rbac]
}

// Outputs become azd environment values. None of them is a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_OPENAI_ENDPOINT string = createOpenAi ? openAi.outputs.endpoint : openAiEndpoint
output AZURE_OPENAI_CHAT_DEPLOYMENT_NAME string = chatDeploymentName
output AZURE_CLIENT_ID string = base.outputs.identityClientId
output APPLICATIONINSIGHTS_NAME string = base.outputs.applicationInsightsName
