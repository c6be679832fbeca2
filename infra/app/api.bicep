// The Flex Consumption function app and every app setting it runs with.
//
// `appSettings` below is the one list of settings. tests/test_infra.py
// parses it: each name must be one the code (or the Functions host, on an
// explicit list in that test) reads, and the settings the app cannot run
// without must all be here. No setting holds a key.
param name string
param location string
param tags object
param planId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param identityId string
param identityClientId string
param pythonVersion string
param instanceMemoryMB int
param maximumInstanceCount int
param httpPerInstanceConcurrency int
param streamAuthLevel string
param openAiEndpoint string
param chatDeploymentName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var appSettings = {
  // The host's storage, through the identity (no connection string).
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  // Telemetry to Application Insights with an Entra ID token: the host reads
  // both; the app's own exporter (telemetry.py) reads both too.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Required by HTTP streaming on Python 3.12 and earlier; harmless on 3.13.
  PYTHON_ENABLE_INIT_INDEXING: '1'
  // Keyless Azure OpenAI: DefaultAzureCredential picks this user-assigned identity.
  AZURE_CLIENT_ID: identityClientId
  MODEL_PROVIDER: 'azure_openai'
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_CHAT_DEPLOYMENT_NAME: chatDeploymentName
  STREAM_AUTH_LEVEL: streamAuthLevel
  // One worker process per instance (the Flex default), so the app's cap per
  // process equals the platform's per-instance HTTP concurrency: the platform
  // scales out before the app has to refuse a run.
  MAX_CONCURRENT_RUNS: string(httpPerInstanceConcurrency)
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: planId
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: appSettings
  }
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
