"""Test-only Django settings: the example project's settings (examples/django_project)
plus request-time-tracker's QUEUE_TIME_TRACKER_* keys, as a project migrating from the
middleware has them. The namespace comes from $TRACKER_TEST_NAMESPACE so that every
test reads its own metrics back from moto."""

import os

from mysite.settings import *  # noqa: F401,F403 - the example project, unchanged

QUEUE_TIME_TRACKER_HEADER = "HTTP_X_REQUESTTIME"
QUEUE_TIME_TRACKER_NOTIFY_EVERY_SECONDS = 1
QUEUE_TIME_TRACKER_CLOUDWATCH_NAMESPACE = os.environ.get("TRACKER_TEST_NAMESPACE", "rwsgi-test/migration")
QUEUE_TIME_TRACKER_CLOUDWATCH_REGION = "us-east-1"
QUEUE_TIME_TRACKER_CLOUDWATCH_ACCESS_KEY = "AKIAMIGRATIONTEST001"
QUEUE_TIME_TRACKER_CLOUDWATCH_SECRET_KEY = "migration-Secret-Key-do-not-log-4f2a"
