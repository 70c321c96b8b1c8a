// Three log search alert rules on the Application Insights component, each a query over what the
// app sends there (docs/observability.md, "The workbook and the alerts"):
//
// - failure rate: the share of Failed terminal events (metric checkpoint.requests) in the window;
// - poisoned requests: the app's Error line "the request landed in the poison queue" (written by
//   report_poisoned_requests for each message it takes off '<requests queue>-poison');
// - oldest operation: the largest checkpoint.operations.oldest_age any instance reported.
//
// Each query ends in one row whose AggregatedValue is compared with the threshold; the rule's
// window is the query's time range. Rules are created disabled when `enabled` is false, and notify
// the action group `actionGroupId` when one is given (else they only show under Alerts).

param applicationInsightsName string
param location string = resourceGroup().location
param tags object = {}

@description('Prefix of the rules\' names (the function app name).')
param namePrefix string

@description('Whether the rules run.')
param enabled bool = true

@description('Resource id of an existing action group to notify; empty = none.')
param actionGroupId string = ''

@description('How often each rule runs its query (ISO 8601 duration).')
param evaluationFrequency string = 'PT5M'

@minValue(1)
@maxValue(100)
@description('Failure rate: alert when more than this percentage of the terminal events in the window are Failed.')
param failureRateThresholdPercent int = 10

@minValue(1)
@description('Failure rate: windows with fewer terminal events than this are not judged.')
param failureRateMinimumRequests int = 5

param failureRateWindowSize string = 'PT1H'

@minValue(0)
@maxValue(4)
param failureRateSeverity int = 2

@minValue(0)
@description('Poisoned requests: alert when more requests than this landed in the poison queue in the window.')
param poisonedRequestsThreshold int = 0

param poisonedRequestsWindowSize string = 'PT15M'

@minValue(0)
@maxValue(4)
param poisonedRequestsSeverity int = 1

@minValue(1)
@description('Oldest operation: alert when an operation still tracked is older than this many seconds.')
param oldestOperationAgeSeconds int = 3600

param oldestOperationWindowSize string = 'PT15M'

@minValue(0)
@maxValue(4)
param oldestOperationSeverity int = 2

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var actions = {
  actionGroups: empty(actionGroupId) ? [] : [
    actionGroupId
  ]
}

resource failureRate 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-failure-rate'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${namePrefix}: checkpoint deletions failing'
    description: 'More than ${failureRateThresholdPercent}% of the terminal events (Succeeded, Failed) in the window are Failed (metric checkpoint.requests; at least ${failureRateMinimumRequests} events). See the workbook "Checkpoint deletions", "Failures by error code".'
    severity: failureRateSeverity
    enabled: enabled
    evaluationFrequency: evaluationFrequency
    windowSize: failureRateWindowSize
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          // {0} is failureRateMinimumRequests
          query: format('''customMetrics
| where name == "checkpoint.requests"
| summarize total = sum(valueSum), failed = sumif(valueSum, tostring(customDimensions.outcome) == "failed"),
    timestamp = max(timestamp)
| where total >= {0}
| project timestamp, total, failed, AggregatedValue = round(100.0 * failed / total, 1)''', failureRateMinimumRequests)
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'AggregatedValue'
          operator: 'GreaterThan'
          threshold: failureRateThresholdPercent
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource poisonedRequests 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-poisoned-requests'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${namePrefix}: requests in the poison queue'
    description: 'More than ${poisonedRequestsThreshold} request(s) landed in the poison queue in the window (the app\'s log line "the request landed in the poison queue"; each also gets a Failed/RetriesExhausted event).'
    severity: poisonedRequestsSeverity
    enabled: enabled
    evaluationFrequency: evaluationFrequency
    windowSize: poisonedRequestsWindowSize
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: '''traces
| where message has "the request landed in the poison queue"
| summarize AggregatedValue = sum(itemCount), timestamp = max(timestamp)'''
          timeAggregation: 'Total'
          metricMeasureColumn: 'AggregatedValue'
          operator: 'GreaterThan'
          threshold: poisonedRequestsThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource oldestOperation 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: '${namePrefix}-oldest-operation'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${namePrefix}: deletions in flight too long'
    description: 'An operation still tracked is older than ${oldestOperationAgeSeconds} s (metric checkpoint.operations.oldest_age, the largest any instance reported in the window).'
    severity: oldestOperationSeverity
    enabled: enabled
    evaluationFrequency: evaluationFrequency
    windowSize: oldestOperationWindowSize
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: '''customMetrics
| where name == "checkpoint.operations.oldest_age"
| summarize AggregatedValue = max(valueMax), timestamp = max(timestamp)'''
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'AggregatedValue'
          operator: 'GreaterThan'
          threshold: oldestOperationAgeSeconds
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

output ruleIds array = [
  failureRate.id
  poisonedRequests.id
  oldestOperation.id
]
