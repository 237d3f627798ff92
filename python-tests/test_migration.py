"""Migration from request-time-tracker: the Django example project, with the
middleware's QUEUE_TIME_TRACKER_* settings (apps/tracker_settings.py), reports queue
time to CloudWatch (moto, through the CBOR adapter) with no rwsgi option beyond the app:
the header, the interval, the namespace, the region and the AWS keys all come from the
settings, and only the endpoint comes from AWS_ENDPOINT_URL. The Azure flavour of the
settings (resource in parts) reports to the Azure fakes the same way. The command line
and the environment still win over the settings, and --ignore-django-settings turns
them off."""

import statistics
import time
import uuid

import pytest

from conftest import EXAMPLES, TESTS_DIR
from sink_services import aws_env, by_metric, drive, poll, totals

DJANGO_DIR = EXAMPLES / "django_project"
APP = "mysite.wsgi:application"
SECRET = "migration-Secret-Key-do-not-log-4f2a"


def namespace(tag):
    return f"rwsgi-test/migration-{tag}/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def django_env(cw_adapter, tmp_path):
    def env(ns, **extra):
        e = aws_env(
            # No AWS credentials at all: only the keys in the Django settings can sign.
            AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None,
            AWS_ENDPOINT_URL=cw_adapter.url,
            DJANGO_SETTINGS_MODULE="apps.tracker_settings", PYTHONPATH=str(TESTS_DIR),
            TRACKER_TEST_NAMESPACE=ns, DJANGO_DB_DIR=str(tmp_path), HOME=str(tmp_path),
        )
        e.update(extra)
        return e
    return env


def time_in_queue_samples(cw_adapter, ns):
    return sum(sum(d["Counts"]) for d in cw_adapter.datums(ns, "TimeInQueue"))


@pytest.mark.parametrize("preload", [[], ["--preload"]], ids=["import-per-worker", "preload"])
def test_settings_alone_report_to_cloudwatch(start_server, cw_adapter, moto, django_env, preload):
    # With --preload the settings are read by the process that imports the app, and
    # the sinks start from them before any worker is forked.
    ns = namespace("settings")
    srv = start_server(APP, *preload, chdir=DJANGO_DIR, env=django_env(ns))
    load = drive(srv, 30, concurrency=3, path="/", header="X-RequestTime")
    assert load.failures == [], load.failures[:3]
    cw = moto.cloudwatch()

    def samples():
        now = time.time()
        points = cw.get_metric_statistics(
            Namespace=ns, MetricName="TimeInQueue", StartTime=now - 600, EndTime=now + 600,
            Period=60, Statistics=["SampleCount", "Sum"])["Datapoints"]
        return sum(p["SampleCount"] for p in points) == 30 and points

    points = poll(samples, 15, what="30 TimeInQueue samples in moto")
    assert sum(p["Sum"] for p in points) > 0
    logs = srv.logs()
    for used in ("--queue-header from QUEUE_TIME_TRACKER_HEADER",
                 "--notify-interval from QUEUE_TIME_TRACKER_NOTIFY_EVERY_SECONDS",
                 "--cloudwatch-namespace from QUEUE_TIME_TRACKER_CLOUDWATCH_NAMESPACE",
                 "--cloudwatch-region from QUEUE_TIME_TRACKER_CLOUDWATCH_REGION",
                 "--notify cloudwatch from QUEUE_TIME_TRACKER_CLOUDWATCH_NAMESPACE",
                 "AWS keys from QUEUE_TIME_TRACKER_CLOUDWATCH_ACCESS_KEY/SECRET_KEY"):
        assert used in logs, f"no log line says {used!r}"
    # NOTIFY_EVERY_SECONDS = 1: reports a second apart, stored at high resolution.
    poll(lambda: len(cw_adapter.requests(ns)) >= 4, 10, what="four reports")
    stamps = sorted({d["Timestamp"] for p in cw_adapter.requests(ns) for d in p["MetricData"]})
    gap = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    assert 0.7 < gap < 1.5, stamps
    assert {d["StorageResolution"] for p in cw_adapter.requests(ns) for d in p["MetricData"]} == {1}
    srv.stop()
    assert SECRET not in srv.logs()


def test_environment_wins_over_settings(start_server, cw_adapter, django_env):
    ns_settings, ns_env = namespace("loser"), namespace("winner")
    srv = start_server(APP, chdir=DJANGO_DIR,
                       env=django_env(ns_settings, RWSGI_CLOUDWATCH_NAMESPACE=ns_env))
    assert drive(srv, 10, concurrency=2, path="/", header="X-RequestTime").failures == []
    poll(lambda: time_in_queue_samples(cw_adapter, ns_env) == 10, 10, what="samples in the env namespace")
    assert cw_adapter.requests(ns_settings) == []


def test_ignore_django_settings(start_server, cw_adapter, django_env):
    ns = namespace("ignored")
    srv = start_server(APP, "--ignore-django-settings", chdir=DJANGO_DIR, env=django_env(ns))
    assert drive(srv, 10, concurrency=2, path="/", header="X-RequestTime").failures == []
    time.sleep(2.5)  # more than two intervals of the settings' NOTIFY_EVERY_SECONDS
    assert cw_adapter.requests(ns) == []
    assert "QUEUE_TIME_TRACKER_" not in srv.logs()


def test_azure_settings_report_to_azure_monitor(start_server, azure_fake, tmp_path):
    fake = azure_fake()
    env = dict(fake.env(), DJANGO_SETTINGS_MODULE="apps.tracker_settings_azure", PYTHONPATH=str(TESTS_DIR),
               DJANGO_DB_DIR=str(tmp_path), RWSGI_AZURE_ENDPOINT=fake.url)
    srv = start_server(APP, chdir=DJANGO_DIR, env=env)
    assert drive(srv, 12, concurrency=2, path="/", header="X-RequestTime").failures == []
    poll(lambda: (q := by_metric(fake.received())["TimeInQueue"]) and totals(q)["count"] == 12,
         10, what="12 TimeInQueue samples at the Azure fake")
    resource = ("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/main"
                "/providers/Microsoft.ContainerService/managedClusters/example-cluster")
    posts = fake.received()
    assert {p["path"] for p in posts} == {resource + "/metrics"}
    assert {p["body"]["data"]["baseData"]["namespace"] for p in posts} == {"queue-time"}
    assert fake.rejected() == []
    assert "--notify azure from QUEUE_TIME_TRACKER_AZURE_REGION" in srv.logs()
