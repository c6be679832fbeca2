// An Azure OpenAI account with one chat deployment, keyless: API keys are
// disabled, callers use Entra ID ("Cognitive Services OpenAI User").
param name string
param location string
param tags object
param chatDeploymentName string
param chatModelName string
param chatModelVersion string
param chatDeploymentSku string
param chatDeploymentCapacity int

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: true
  }
}

resource chat 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: chatDeploymentName
  sku: {
    name: chatDeploymentSku
    capacity: chatDeploymentCapacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: chatModelName
      version: chatModelVersion
    }
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
