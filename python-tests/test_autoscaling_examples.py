"""examples/autoscaling/ against the real parts (issue 13).

* Kubernetes manifests validate offline against the Kubernetes schemas
  (kubernetes-validate, strict) and the ScaledObjects against KEDA's CRD schema
  (schemas/keda.sh_scaledobjects.yaml, see schemas/README.md), unknown fields refused.
* A real Prometheus (Debian's package) scrapes rwsgi, started with the shipped
  Deployment's command, behind nginx with the shipped nginx.conf, while a load with
  known queueing runs: 1 worker × 2 Python threads, 6 closed-loop clients, a 200 ms
  app, so each request waits (6 ÷ 2 − 1) × 200 ms = 400 ms. The exact PromQL of the
  shipped ScaledObject (read from the YAML) must return that within 10%, and so must
  KEDA metrics-api's valueLocation on /queue-time.json, and fly-autoscaler's queries.
* The CloudFormation template's task command runs rwsgi against moto; the alarm and
  both scaling policies must name a namespace, metric and dimensions that
  list_metrics shows, with data in the unit and statistic they ask for.
* The Azure autoscale rule names the metric and namespace rwsgi posts.
"""

import json
import math
import os
import re
import shutil
import subprocess
import time
import types
import urllib.parse
import urllib.request
from pathlib import Path

import gjson
import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml

from conftest import EXAMPLES, free_port
from sink_services import aws_env, drive, poll, stop_proc

AUTOSCALING = EXAMPLES / "autoscaling"
K8S = AUTOSCALING / "kubernetes"
KEDA_CRD = Path(__file__).parent / "schemas" / "keda.sh_scaledobjects.yaml"
APP = "apps.queue_app:application"
# The Kubernetes version the manifests are checked against (kubernetes-validate ships it).
K8S_VERSION = "1.33"

# The load with known queueing.
THREADS = 2
CLIENTS = 6
SERVICE_S = 0.2
EXPECTED_QUEUE_S = (CLIENTS / THREADS - 1) * SERVICE_S


def docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(path: Path, kind: str) -> dict:
    found = [d for d in docs(path) if d["kind"] == kind]
    assert len(found) == 1, (path, kind, found)
    return found[0]


def rwsgi_command(argv: list) -> list:
    """The rwsgi options of a shipped command line (program and app left out)."""
    assert argv[0] == "rwsgi", argv
    return [a for a in argv[1:] if a.startswith("--")]


def override(options: list, **values) -> list:
    """Replaces `--name=value` options (names with _ for -); adds those not present."""
    out, seen = [], set()
    for opt in options:
        name = opt[2:].split("=", 1)[0]
        key = name.replace("-", "_")
        if key in values:
            seen.add(key)
            if values[key] is not None:
                out.append(f"--{name}={values[key]}")
        else:
            out.append(opt)
    out += [f"--{k.replace('_', '-')}={v}" for k, v in values.items() if k not in seen and v is not None]
    return out


# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------


def strict(schema: dict) -> dict:
    """The CRD's schema as an API server with strict field validation applies it: an
    object with `properties` and neither `additionalProperties` nor
    `x-kubernetes-preserve-unknown-fields` refuses unknown fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def keda_validator():
    crd = yaml.safe_load(KEDA_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


SCALED_OBJECTS = [K8S / "keda-prometheus.yaml", K8S / "keda-metrics-api.yaml"]


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_validate(path):
    validator = keda_validator()
    for doc in docs(path):
        if doc["apiVersion"].startswith("keda.sh/"):
            assert doc["kind"] == "ScaledObject"
            errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
            assert errors == [], errors
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validators_refuse_a_broken_manifest():
    so = one(K8S / "keda-prometheus.yaml", "ScaledObject")
    bad = json.loads(json.dumps(so))
    bad["spec"]["triggers"][0]["metaData"] = bad["spec"]["triggers"][0].pop("metadata")
    assert list(keda_validator().iter_errors(bad)), "a misspelt trigger field must fail"
    bad = json.loads(json.dumps(so))
    del bad["spec"]["scaleTargetRef"]
    assert list(keda_validator().iter_errors(bad)), "scaleTargetRef is required"
    dep = one(K8S / "deployment.yaml", "Deployment")
    bad = json.loads(json.dumps(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["comand"] = ["rwsgi"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_manifests_agree_with_each_other():
    """The ScaledObjects target the Deployment; metrics-api asks the Service's metrics
    port, which is where the Deployment's rwsgi serves /queue-time.json."""
    dep = one(K8S / "deployment.yaml", "Deployment")
    svc = one(K8S / "deployment.yaml", "Service")
    app = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["command"][0] == "rwsgi")
    metrics_bind = next(a.split("=", 1)[1] for a in app["command"] if a.startswith("--metrics-bind="))
    metrics_port = int(metrics_bind.rsplit(":", 1)[1])
    assert {"containerPort": metrics_port, "name": "metrics"} in app["ports"]
    for path in SCALED_OBJECTS:
        so = one(path, "ScaledObject")
        assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
        assert so["metadata"]["namespace"] == dep["metadata"]["namespace"]
        for trigger in so["spec"]["triggers"]:
            # A time is compared per request, not divided by the pod count.
            assert trigger["metricType"] == "Value", (path, trigger)
    trigger = one(K8S / "keda-metrics-api.yaml", "ScaledObject")["spec"]["triggers"][0]
    url = urllib.parse.urlsplit(trigger["metadata"]["url"])
    # KEDA reads <service>.<namespace> from the host and the endpoint port from the URL.
    service, namespace = url.hostname.split(".")[:2]
    assert (service, namespace) == (svc["metadata"]["name"], svc["metadata"]["namespace"])
    port = next(p for p in svc["spec"]["ports"] if p["port"] == url.port)
    assert port["targetPort"] == "metrics" and url.path == "/queue-time.json"
    assert trigger["metadata"]["aggregateFromKubeServiceEndpoints"] == "true"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # The probes ask rwsgi's health listener.
    health_port = int(next(a for a in app["command"] if a.startswith("--health-bind=")).rsplit(":", 1)[1])
    assert {"containerPort": health_port, "name": "health"} in app["ports"]
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    delay = float(next(a for a in app["command"] if a.startswith("--shutdown-delay=")).split("=")[1])
    grace = float(next(a for a in app["command"] if a.startswith("--graceful-timeout=")).split("=")[1])
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= delay + grace


# ---------------------------------------------------------------------------
# Prometheus, nginx, rwsgi under a load with known queueing
# ---------------------------------------------------------------------------


def prometheus_binary() -> str:
    exe = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert os.path.exists(exe), "Debian's prometheus package is not installed (scripts/test.sh installs it)"
    return exe


def scrape_job(labels: dict, target: str) -> dict:
    """The shipped scrape job (job_name, path) with a static target instead of
    Kubernetes discovery, scraped every second."""
    cm = one(K8S / "prometheus-scrape.yaml", "ConfigMap")
    (job,) = yaml.safe_load(cm["data"]["scrape-web.yml"])["scrape_configs"]
    job = dict(job)
    job.pop("kubernetes_sd_configs")
    job.pop("relabel_configs")
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [target], "labels": labels}]
    return job


class Prometheus:
    def __init__(self, tmp: Path, job: dict):
        self.port = free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [job]}))
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(
                [prometheus_binary(), f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        poll(lambda: self.ready(), 30, what=f"prometheus ready ({self.log})")

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def query(self, promql: str) -> list:
        r = requests.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (promql, body)
        return body["data"]["result"]

    def scalar(self, promql: str) -> float:
        """What KEDA's prometheus scaler reads: the single element of the result."""
        result = self.query(promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])

    def scraped(self, metric: str) -> float:
        result = self.query(metric)
        return float(result[0]["value"][1]) if result else -1.0

    def stop(self):
        stop_proc(self.proc)


def launch_shipped_nginx(prefix: Path, upstream_port: int):
    """nginx with the Deployment's ConfigMap nginx.conf, ports and paths moved here."""
    conf = one(K8S / "deployment.yaml", "ConfigMap")["data"]["nginx.conf"]
    assert "proxy_set_header X-RequestTime $msec;" in conf
    port = free_port()
    prefix.mkdir(parents=True, exist_ok=True)
    text = (conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
            .replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
            .replace("/tmp/", f"{prefix}/"))
    if os.geteuid() == 0:
        text = "user root;\n" + text
    (prefix / "nginx.conf").write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with open(prefix / "nginx.stderr", "wb") as err:
        proc = subprocess.Popen([nginx, "-g", "daemon off;", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                 "-e", str(prefix / "error.log")],
                                stdout=err, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)

    def up():
        assert proc.poll() is None, (prefix / "nginx.stderr").read_text()
        try:
            return requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except requests.RequestException:
            return False
    poll(up, 15, what="nginx")
    return proc, port


@pytest.fixture(scope="module")
def queued_run(rwsgi_bin, tmp_path_factory):
    """rwsgi (the Deployment's command) behind the shipped nginx, scraped by a real
    Prometheus, under CLIENTS closed-loop clients of a SERVICE_S app on THREADS threads."""
    from conftest import launch

    tmp = tmp_path_factory.mktemp("queued")
    dep = one(K8S / "deployment.yaml", "Deployment")
    app = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["command"][0] == "rwsgi")
    metrics = f"127.0.0.1:{free_port()}"
    options = override(rwsgi_command(app["command"]), bind=None, workers=1, threads=THREADS,
                       metrics_bind=metrics, notify_interval=1, graceful_timeout=5,
                       health_bind=f"127.0.0.1:{free_port()}")
    srv = launch(rwsgi_bin, APP, options, tmp / "rwsgi")
    nginx, nginx_port = launch_shipped_nginx(tmp / "nginx", srv.port)
    prom = Prometheus(tmp / "prometheus", scrape_job({"app": "my-app"}, metrics))
    try:
        poll(lambda: prom.scraped("rwsgi_workers") == 1, 30, what="prometheus to scrape rwsgi")
        front = types.SimpleNamespace(host="127.0.0.1", port=nginx_port)
        drive(front, 10, concurrency=2, path="/", stamp_every=0)  # warm-up, no sleep
        t0 = time.time()
        snapshots = []

        def sample_json():
            # What KEDA's metrics-api would read, taken in the middle of the load.
            time.sleep(12)
            snapshots.append(requests.get(f"http://{metrics}/queue-time.json", timeout=5).text)

        import threading
        sampler = threading.Thread(target=sample_json)
        sampler.start()
        load = drive(front, CLIENTS * 40, concurrency=CLIENTS, path=f"/sleep?ms={SERVICE_S * 1000:g}",
                     stamp_every=0)
        sampler.join()
        elapsed = time.time() - t0
        assert load.failures == [], load.failures[:5]
        # Every request reported and scraped.
        poll(lambda: prom.scraped("rwsgi_queue_time_seconds_count") >= CLIENTS * 40, 20,
             what="prometheus to see every stamped request")
        yield types.SimpleNamespace(prom=prom, srv=srv, metrics=metrics, load=load, elapsed=elapsed,
                                    json_during_load=snapshots[0])
    finally:
        prom.stop()
        stop_proc(nginx)
        srv.stop()


def test_the_load_caused_the_expected_queue(queued_run):
    """The client's view: each request took about CLIENTS ÷ THREADS × SERVICE_S."""
    lat = sorted(queued_run.load.latencies)
    median = lat[len(lat) // 2]
    assert abs(median - (EXPECTED_QUEUE_S + SERVICE_S)) < 0.1 * (EXPECTED_QUEUE_S + SERVICE_S), median


def test_keda_prometheus_query_returns_the_caused_queue_time(queued_run):
    so = one(K8S / "keda-prometheus.yaml", "ScaledObject")
    triggers = {t["name"]: t for t in so["spec"]["triggers"]}
    query = triggers["queue-time"]["metadata"]["query"]
    value = queued_run.prom.scalar(query)
    print(f"PromQL {query!r} = {value:.4f} s (caused: {EXPECTED_QUEUE_S} s)")
    assert abs(value - EXPECTED_QUEUE_S) <= 0.1 * EXPECTED_QUEUE_S, (query, value, EXPECTED_QUEUE_S)
    # Far above the shipped threshold: a service queueing 400 ms scales out.
    assert value > float(triggers["queue-time"]["metadata"]["threshold"])
    # Both threads were busy for the whole load; the 2-minute window also holds the
    # idle seconds before it, so the average lies between their share and 1.
    util = queued_run.prom.scalar(triggers["utilization"]["metadata"]["query"])
    assert 0.5 < util <= 1.0, util


def test_keda_metrics_api_value_location_reads_queue_time_json(queued_run):
    trigger = one(K8S / "keda-metrics-api.yaml", "ScaledObject")["spec"]["triggers"][0]
    location = trigger["metadata"]["valueLocation"]
    assert trigger["metadata"]["format"] == "json"
    body = json.loads(queued_run.json_during_load)
    value = gjson.get(body, location)
    # KEDA needs a JSON number there (or a quantity string).
    assert isinstance(value, float), (location, value)
    assert abs(value - EXPECTED_QUEUE_S) <= 0.1 * EXPECTED_QUEUE_S, (location, body)
    # The interval as measured (the timer's 1 s, give or take its wake-up).
    assert abs(body["interval_seconds"] - 1.0) < 0.05 and body["queue_time_seconds"]["count"] > 0


def test_fly_autoscaler_queries_and_expression(queued_run):
    conf = yaml.safe_load((AUTOSCALING / "fly" / "fly-autoscaler.yml").read_text())
    metrics = {c["metric-name"]: queued_run.prom.scalar(c["query"]) for c in conf["metric-collectors"]}
    assert metrics["machines"] == 1
    assert abs(metrics["queue_time"] - EXPECTED_QUEUE_S) <= 0.1 * EXPECTED_QUEUE_S, metrics
    # The expression uses only ceil, max, numbers and the collected names (a subset of
    # expr-lang that Python evaluates the same way).
    expr = conf["created-machine-count"]
    names = set(re.findall(r"[A-Za-z_]+", expr)) - {"ceil", "max"}
    assert names <= set(metrics), names
    desired = eval(expr, {"__builtins__": {}}, {"ceil": math.ceil, "max": max, **metrics})
    assert desired == max(2, math.ceil(metrics["queue_time"] / 0.05), math.ceil(metrics["utilization"] / 0.7))
    assert desired >= 8, "a 400 ms queue on one machine asks for 8 or more at a 50 ms target"


# ---------------------------------------------------------------------------
# CloudWatch (moto) and Azure
# ---------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """CloudFormation's short-form tags (!Ref, !Sub) read as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: (
    {suffix: loader.construct_scalar(node)} if isinstance(node, yaml.ScalarNode)
    else {suffix: loader.construct_sequence(node)}))


def test_cloudwatch_alarm_and_policies_name_what_rwsgi_sends(start_server, cw_adapter, moto):
    cfn = yaml.load((AUTOSCALING / "aws" / "ecs-autoscaling.yaml").read_text(), Loader=CfnLoader)
    res = cfn["Resources"]
    (container,) = res["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    options = override(rwsgi_command(container["Command"]), bind=None, workers=1, threads=THREADS,
                       notify_interval=1, cloudwatch_region="us-east-1", cloudwatch_endpoint=cw_adapter.url)
    srv = start_server(APP, *options, env=aws_env())
    # The example's rwsgi sits behind a stamping proxy; here the client stamps.
    assert drive(srv, 30, concurrency=CLIENTS, path="/sleep?ms=50").failures == []
    namespace = next(o.split("=", 1)[1] for o in options if o.startswith("--cloudwatch-namespace="))
    cw = moto.cloudwatch()

    def listed():
        return {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"]))
                for m in cw.list_metrics(Namespace=namespace)["Metrics"]}
    poll(lambda: {"TimeInQueue", "Utilization"} <= {name for name, _ in listed()}, 15,
         what="TimeInQueue and Utilization in moto")
    sent = listed()

    alarm = res["QueueTimeAlarm"]["Properties"]
    tracking = res["UtilizationTargetTracking"]["Properties"]["TargetTrackingScalingPolicyConfiguration"][
        "CustomizedMetricSpecification"]
    for spec in (alarm, tracking):
        assert spec["Namespace"] == namespace
        key = (spec["MetricName"], tuple((d["Name"], d["Value"]) for d in spec["Dimensions"]))
        assert key in sent, (key, sent)
    assert alarm["AlarmActions"] == [{"Ref": "QueueTimeStepScaling"}]
    assert res["QueueTimeStepScaling"]["Properties"]["ScalingTargetId"] == {"Ref": "ScalableTarget"}

    # The statistic, unit and period each ask for data that exists.
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    window = dict(StartTime=now - datetime.timedelta(minutes=10), EndTime=now + datetime.timedelta(minutes=5))
    # moto computes no percentiles: the p90 alarm's series is checked for samples in
    # its unit, and the alarm itself is created in moto as the template defines it.
    seconds = cw.get_metric_statistics(Namespace=namespace, MetricName=alarm["MetricName"],
                                       Dimensions=alarm["Dimensions"], Period=alarm["Period"],
                                       Statistics=["SampleCount"], Unit=alarm["Unit"], **window)["Datapoints"]
    assert sum(p["SampleCount"] for p in seconds) == 30, seconds
    fields = {k: v for k, v in alarm.items() if k != "AlarmActions"}
    cw.put_metric_alarm(**fields, AlarmActions=["arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x"])
    (created,) = cw.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"]
    assert (created["Namespace"], created["MetricName"], created["ExtendedStatistic"]) == (
        namespace, "TimeInQueue", "p90")
    util = cw.get_metric_statistics(Namespace=namespace, MetricName=tracking["MetricName"],
                                    Dimensions=tracking["Dimensions"], Period=60,
                                    Statistics=[tracking["Statistic"]], Unit=tracking["Unit"],
                                    **window)["Datapoints"]
    assert util and all(0 <= p[tracking["Statistic"]] <= 100 for p in util), util
    # A utilization target is a percentage, as rwsgi sends it.
    assert 0 < res["UtilizationTargetTracking"]["Properties"][
        "TargetTrackingScalingPolicyConfiguration"]["TargetValue"] <= 100


def test_azure_autoscale_rule_names_what_rwsgi_posts(start_server, azure_fake):
    from sink_services import by_metric

    template = json.loads((AUTOSCALING / "azure" / "autoscale.json").read_text())
    (setting,) = template["resources"]
    triggers = [r["metricTrigger"] for p in setting["properties"]["profiles"] for r in p["rules"]]
    namespaces = {t["metricNamespace"] for t in triggers}
    assert len(namespaces) == 1
    fake = azure_fake()
    resource = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/" \
               "Microsoft.Compute/virtualMachineScaleSets/web"
    srv = start_server(APP, "--notify", "azure", "--azure-region", "West Europe", "--azure-endpoint", fake.url,
                       "--azure-resource-id", resource, "--azure-namespace", namespaces.pop(),
                       "--notify-interval", "1", "--queue-header", "X-RequestTime", env=fake.env())
    assert drive(srv, 10, concurrency=2, path="/sleep?ms=10").failures == []
    names = {t["metricName"] for t in triggers}
    poll(lambda: names <= set(by_metric(fake.received())), 15, what=f"{names} posted")
    for post in fake.received():
        base = post["body"]["data"]["baseData"]
        if base["metric"] in names:
            assert base["namespace"] == triggers[0]["metricNamespace"]
            # Utilization goes out in percent, which the 70/30 thresholds assume.
            if base["metric"] == "Utilization":
                assert all(0 <= s["max"] <= 100 for s in base["series"])
