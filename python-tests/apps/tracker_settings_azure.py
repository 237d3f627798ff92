"""Test-only Django settings: the example project's settings plus the Azure flavour of
request-time-tracker's QUEUE_TIME_TRACKER_* keys (AzureMonitoringQueueTimeTracker),
with the resource given in parts and AZURE_RESOURCE_ID naming the resource, as the
middleware took it."""

from mysite.settings import *  # noqa: F401,F403 - the example project, unchanged

QUEUE_TIME_TRACKER_HEADER = "HTTP_X_REQUESTTIME"
QUEUE_TIME_TRACKER_NOTIFY_EVERY_SECONDS = 1
QUEUE_TIME_TRACKER_AZURE_REGION = "westeurope"
QUEUE_TIME_TRACKER_AZURE_SUBSCRIPTION_ID = "00000000-1111-2222-3333-444444444444"
QUEUE_TIME_TRACKER_AZURE_RESOURCE_GROUP_NAME = "main"
QUEUE_TIME_TRACKER_AZURE_PROVIDER_NAME = "Microsoft.ContainerService"
QUEUE_TIME_TRACKER_AZURE_RESOURCE_TYPE = "managedClusters"
QUEUE_TIME_TRACKER_AZURE_RESOURCE_ID = "example-cluster"
QUEUE_TIME_TRACKER_AZURE_NAMESPACE = "queue-time"
