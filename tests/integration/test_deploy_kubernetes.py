"""Kubernetes packaging (deploy/kubernetes) and the container image (Dockerfile) match the code.

Proves, with the real ``kubectl kustomize`` and the ``kubernetes-validate`` schemas:

* every overlay (and the prometheus-adapter bundle) renders, and every rendered object is valid
  for a recent Kubernetes release (CRD kinds the schemas do not know are listed explicitly);
* the manifests agree with the code: ports and probe paths, every Quarterdeck/guide environment
  variable is one ``Settings`` reads, the mounted quarterdeck.yaml holds only valid settings,
  the grace period covers the drain timeout, and the HPA's custom metric is produced by the
  adapter from a metric that exists in the registry;
* the API and the workers are separate Deployments (issue 15): the API runs ``serve`` (no
  workers) and is the only one the Service, Ingress and API NetworkPolicy select; the workers
  run ``worker`` (no API port, probes on the metrics port) and are what the HPA scales; both
  are scraped, each has its PDB, and the data dir is an emptyDir sized for the workspaces;
* the guide's defects stay fixed (Redis password, NetworkPolicy, RBAC scope, dev overlay);
  what keeps agent commands away from secrets (files not env, no token, bubblewrap-ready pods,
  the egress policy) is held by test_deploy_kubernetes_isolation.py;
* the Dockerfile is multi-stage, runs as non-root with a python HEALTHCHECK on /health and
  has no compilers in its final stage (Docker cannot run here, so this is a static check).
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest
import yaml

from quarterdeck.config import DEFAULT_CONFIG_PATHS, GUIDE_ENV_NAMES, Settings, env_names
from quarterdeck.health.lease import LeaseElector
from quarterdeck.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["overlays/dev", "overlays/production"]
BUNDLES = ["base", *OVERLAYS, "prometheus-adapter"]
K8S_VERSION = "1.32.0"
# Custom resources whose schemas kubernetes-validate does not ship (checked by hand below).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Environment variables in the manifests that are not settings, and why (none today).
NOT_SETTINGS: set[str] = set()


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("`kubectl` is not installed; `make test` installs it (kubectl kustomize).")
    return path


_rendered: dict[str, list[dict[str, Any]]] = {}


def render(bundle: str | Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a bundle under deploy/kubernetes (or any kustomization dir)."""
    bundle = str(bundle)
    if bundle not in _rendered:
        result = subprocess.run(
            [kubectl(), "kustomize", str(KUBE / bundle)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        _rendered[bundle] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return _rendered[bundle]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


API = "claude-agent-api"
WORKER = "claude-agent-worker"
DEPLOYMENTS = (API, WORKER)


def container_of(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    found = find(docs, "Deployment", deployment)
    container: dict[str, Any] = found["spec"]["template"]["spec"]["containers"][0]
    return container


def worker(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker container: the one that runs agent commands (in dev, also the API)."""
    return container_of(docs, WORKER)


def api(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return container_of(docs, API)


def deployments(docs: list[dict[str, Any]]) -> list[str]:
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    return [n for n in DEPLOYMENTS if n in names]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def pod_volume(docs: list[dict[str, Any]], name: str, deployment: str = WORKER) -> dict[str, Any]:
    spec = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    volume: dict[str, Any] = next(v for v in spec["volumes"] if v["name"] == name)
    return volume


def secret_files(
    docs: list[dict[str, Any]], deployment: str = WORKER
) -> dict[str, tuple[str, str, bool]]:
    """A Deployment's secret files: file name -> (Secret, key, optional)."""
    files: dict[str, tuple[str, str, bool]] = {}
    for source in pod_volume(docs, "secrets", deployment)["projected"]["sources"]:
        secret = source["secret"]
        for item in secret["items"]:
            files[item["path"]] = (secret["name"], item["key"], secret.get("optional", False))
    return files


def registry_series() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


# ------------------------------------------------------------------ rendering and schemas
@pytest.mark.parametrize("bundle", BUNDLES)
def test_kustomize_renders(bundle: str) -> None:
    assert render(bundle)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_rendered_objects_are_valid_kubernetes(bundle: str) -> None:
    for doc in render(bundle):
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


def test_servicemonitor_scrapes_every_api_and_worker_pod_on_the_metrics_port() -> None:
    docs = render("overlays/production")
    monitor = find(docs, "ServiceMonitor", "claude-agent")
    selected = [
        d
        for d in docs
        if d["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items()
        <= d["metadata"].get("labels", {}).items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["claude-agent-metrics"]
    service = selected[0]
    assert service["spec"]["clusterIP"] == "None", "headless: one endpoint per pod"
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    for name in DEPLOYMENTS:  # the metrics Service selects both kinds of pod
        labels = find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        ports = {p["name"]: p["containerPort"] for p in container_of(docs, name)["ports"]}
        assert ports["metrics"] == Settings.model_fields["metrics_port"].default
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # Alerts and dashboards select job="claude-agents"; the Down alerts split by component.
    relabelings = endpoint["relabelings"]
    assert {"targetLabel": "job", "replacement": "claude-agents", "action": "replace"} in (
        relabelings
    )
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_label_tier"],
        "targetLabel": "component",
    } in relabelings
    tiers = {
        find(docs, "Deployment", n)["spec"]["template"]["metadata"]["labels"]["tier"]
        for n in DEPLOYMENTS
    }
    assert tiers == {"api", "worker"}, "the component values the alert rules use"
    # prometheus.yml (without the Operator) keeps the same Service's metrics port.
    prom = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "claude-agents")
    assert job["relabel_configs"][0]["regex"] == "claude-agent-metrics;metrics"
    assert {
        "source_labels": ["__meta_kubernetes_pod_label_tier"],
        "target_label": "component",
    } in job["relabel_configs"]


# ---------------------------------------------------------------- manifests match the code
def test_the_api_deployment_runs_serve_and_is_the_only_one_behind_the_service() -> None:
    docs = render("overlays/production")
    defaults = Settings.model_fields
    container = api(docs)
    assert container["args"] == ["serve"], "`serve` is the API without workers"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": defaults["http_port"].default,
        "metrics": defaults["metrics_port"].default,
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # The guide's timings; /ready pings Postgres and Redis (at most ~1.5 s): more than 1 s.
    assert container["livenessProbe"]["initialDelaySeconds"] == 30
    assert container["livenessProbe"]["periodSeconds"] == 10
    assert container["readinessProbe"]["initialDelaySeconds"] == 5
    assert container["readinessProbe"]["periodSeconds"] == 5
    from quarterdeck.health.dependencies import PING_TIMEOUT_S

    assert container["readinessProbe"]["timeoutSeconds"] >= 2 * PING_TIMEOUT_S + 0.5
    env = env_of(container)
    assert int(env["QUARTERDECK_HTTP_PORT"]["value"]) == defaults["http_port"].default
    assert int(env["QUARTERDECK_METRICS_PORT"]["value"]) == defaults["metrics_port"].default
    assert env["QUARTERDECK_HTTP_HOST"]["value"] == "0.0.0.0"
    assert "QUARTERDECK_WORKER_PROCESSES" not in env
    # The Service (and so the Ingress) selects API pods only.
    service = find(docs, "Service", "claude-agent-service")
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {(8080, "http")}
    api_labels = find(docs, "Deployment", API)["spec"]["template"]["metadata"]["labels"]
    worker_labels = find(docs, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= api_labels.items()
    assert not service["spec"]["selector"].items() <= worker_labels.items()
    ingress = find(docs, "Ingress", "claude-agent-ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "claude-agent-service", "port": {"number": 8080}}
    assert ingress["spec"]["tls"]
    # Alertmanager's webhook goes to the same Service.
    am = yaml.safe_load((ROOT / "deploy" / "monitoring" / "alertmanager.yml").read_text())
    hooks = [w["url"] for r in am["receivers"] for w in r.get("webhook_configs", [])]
    assert hooks == ["http://claude-agent-service.ai-agents.svc:8080/v1/alerts/alertmanager"]


def test_the_worker_deployment_runs_worker_and_serves_no_api() -> None:
    docs = render("overlays/production")
    container = worker(docs)
    assert container["args"] == ["worker"], "`worker` runs workers and no API"
    assert [p["name"] for p in container["ports"]] == ["metrics"], "no http port"
    env = env_of(container)
    assert "QUARTERDECK_HTTP_PORT" not in env
    # The metrics listener binds the HTTP host: reachable by Prometheus and the kubelet.
    assert env["QUARTERDECK_HTTP_HOST"]["value"] == "0.0.0.0"
    # Probes on the metrics port, which answers them without the token (health/heartbeat.py).
    from quarterdeck.health.heartbeat import PROBE_PATHS

    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert {"/health", "/ready"} == PROBE_PATHS
    labels = find(docs, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    for service in (d for d in docs if d["kind"] == "Service"):
        if service["spec"]["selector"].items() <= labels.items():
            # Only the headless metrics Service, and only its metrics port: no API traffic.
            assert service["metadata"]["name"] == "claude-agent-metrics"
            assert {p["name"] for p in service["spec"]["ports"]} == {"metrics"}
    ingress_ports = {
        p["port"]
        for policy in docs
        if policy["kind"] == "NetworkPolicy"
        and "Ingress" in policy["spec"]["policyTypes"]
        and policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        for rule in policy["spec"]["ingress"]
        for p in rule["ports"]
    }
    assert ingress_ports == {9090}


def test_the_api_pod_runs_no_agent_commands_so_it_is_restricted() -> None:
    docs = render("overlays/production")
    spec = find(docs, "Deployment", API)["spec"]["template"]["spec"]
    container = api(docs)
    assert "hostUsers" not in spec
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "procMount" not in container["securityContext"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "QUARTERDECK_SANDBOX_MODE" not in env_of(container), "bwrap forced would refuse start"


@pytest.mark.parametrize("bundle", OVERLAYS)
def test_every_environment_variable_is_one_settings_reads(bundle: str) -> None:
    readable = set(env_names().values())
    docs = render(bundle)
    for deployment in deployments(docs):
        for name, var in env_of(container_of(docs, deployment)).items():
            if name in NOT_SETTINGS:
                continue
            assert name in readable, f"{deployment}: {name} is not read by Settings"
            if "valueFrom" in var:  # never a secretKeyRef: see test_deploy_kubernetes_isolation
                assert set(var["valueFrom"]) == {"configMapKeyRef"}, name


@pytest.mark.parametrize("bundle", OVERLAYS)
def test_every_value_in_the_manifests_is_a_valid_setting(
    bundle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only names: Settings accepts each Deployment's environment with its values."""
    from quarterdeck.config import load_settings

    docs = render(bundle)
    for deployment in deployments(docs):
        for var in set(env_names().values()) | {"QUARTERDECK_CONFIG"}:
            monkeypatch.delenv(var, raising=False)
        env = env_of(container_of(docs, deployment))
        for name, var in env.items():
            if name not in {"QUARTERDECK_SECRETS_DIR", "QUARTERDECK_AUDIT_SIGNING_KEY_FILE"}:
                monkeypatch.setenv(name, var["value"])
        # Production's guards want the secret files (test_deploy_kubernetes_isolation.py reads
        # them); every other value is checked as written.
        assert env["QUARTERDECK_ENV"]["value"] in get_args(Settings.model_fields["env"].annotation)
        monkeypatch.setenv("QUARTERDECK_ENV", "development")
        settings = load_settings(None)
        assert settings.metrics_port == Settings.model_fields["metrics_port"].default
        assert str(settings.data_dir) == env["QUARTERDECK_DATA_DIR"]["value"]


@pytest.mark.parametrize("bundle", OVERLAYS)
def test_dependent_environment_variables_are_defined_first(bundle: str) -> None:
    """Kubernetes expands $(VAR) only from variables listed earlier; otherwise it stays literal."""
    docs = render(bundle)
    for deployment in deployments(docs):
        seen: set[str] = set()
        for var in container_of(docs, deployment).get("env", []):
            for ref in re.findall(r"\$\(([A-Z_]+)\)", var.get("value", "")):
                assert ref in seen, f"{var['name']} uses $({ref}) before it is defined"
            seen.add(var["name"])


def test_production_and_dev_overlays_differ_as_documented() -> None:
    prod, dev = render("overlays/production"), render("overlays/dev")
    prod_env, dev_env = env_of(worker(prod)), env_of(worker(dev))
    assert prod_env["QUARTERDECK_ENV"]["value"] == "production"
    assert env_of(api(prod))["QUARTERDECK_ENV"]["value"] == "production"
    prod_files, dev_files = secret_files(prod), secret_files(dev)
    assert secret_files(prod, API) == prod_files, "API and workers read the same settings"
    assert prod_files["postgres_url"] == ("db-secrets", "connection-url", False)
    assert prod_files["audit_master_key"] == ("quarterdeck-audit", "master-key", False)
    assert "QUARTERDECK_AUDIT_SIGNING_KEY_FILE" in prod_env
    assert find(prod, "Deployment", API)["spec"]["replicas"] == 2
    assert "replicas" not in find(prod, "Deployment", WORKER)["spec"], "the HPA owns it"
    assert dev_env["QUARTERDECK_ENV"]["value"] == "development"
    assert "postgres_url" not in dev_files, "dev uses the embedded Postgres"
    assert "audit_master_key" not in dev_files, "dev generates its audit keys"
    assert "QUARTERDECK_AUDIT_SIGNING_KEY_FILE" not in dev_env
    assert dev_files["admin_api_key"] == ("claude-secrets", "admin-api-key", True)
    assert dev_files["anthropic_api_key"] == ("claude-secrets", "api-key", True)
    assert not [d for d in dev if d["kind"] in {"HorizontalPodAutoscaler", "PodDisruptionBudget"}]
    assert worker(prod)["image"].startswith("your-registry/quarterdeck:")
    assert api(prod)["image"] == worker(prod)["image"]
    # Dev: one pod with `up` (the embedded Postgres is in its data dir), behind the Service.
    assert deployments(dev) == [WORKER]
    assert find(dev, "Deployment", WORKER)["spec"]["replicas"] == 1
    one = worker(dev)
    assert one["args"] == ["up"]
    assert {p["name"] for p in one["ports"]} == {"http", "metrics"}
    assert one["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert one["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    labels = find(dev, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    assert find(dev, "Service", "claude-agent-service")["spec"]["selector"].items() <= (
        labels.items()
    )
    api_policy = find(dev, "NetworkPolicy", "claude-agent-api")
    assert api_policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_mounted_config_holds_only_valid_settings(tmp_path: Path, monkeypatch: Any) -> None:
    docs = render("overlays/production")
    texts = set()
    for name in DEPLOYMENTS:
        deployment = find(docs, "Deployment", name)
        mount = next(
            m for m in container_of(docs, name)["volumeMounts"] if m["name"] == "config-volume"
        )
        assert Path(mount["mountPath"]) == DEFAULT_CONFIG_PATHS[0].parent
        volume = next(
            v
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "config-volume"
        )
        configmap = find(docs, "ConfigMap", volume["configMap"]["name"])
        texts.add(configmap["data"][DEFAULT_CONFIG_PATHS[0].name])
    (text,) = texts  # one ConfigMap for both
    assert set(yaml.safe_load(text)) <= set(Settings.model_fields)
    # And Settings really accepts it (unknown keys or bad values raise ConfigError).
    for var in set(env_names().values()) | {"QUARTERDECK_CONFIG"}:
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "quarterdeck.yaml"
    path.write_text(text)
    from quarterdeck.config import load_settings

    settings = load_settings(path)
    assert settings.worker_concurrency == yaml.safe_load(text)["worker_concurrency"]


def quantity(text: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", text)
    assert match, text
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def test_the_data_dir_is_an_emptydir_sized_for_the_workspaces(tmp_path: Path) -> None:
    """Workspaces are checkpointed to Postgres, so the data dir need not persist; its limit must
    still hold what one pod may have at once, or the kubelet evicts a busy worker."""
    docs = render("overlays/production")
    text = find(docs, "ConfigMap", "claude-agent-config")["data"]["quarterdeck.yaml"]
    config = yaml.safe_load(text)
    fields = Settings.model_fields
    concurrency = config.get("worker_concurrency", fields["worker_concurrency"].default)
    workspace = config.get("workspace_max_bytes", fields["workspace_max_bytes"].default)
    for name in DEPLOYMENTS:
        env = env_of(container_of(docs, name))
        mount = next(
            m
            for m in container_of(docs, name)["volumeMounts"]
            if m["mountPath"] == env["QUARTERDECK_DATA_DIR"]["value"]
        )
        volume = pod_volume(docs, mount["name"], name)
        assert set(volume) == {"name", "emptyDir"}, f"{name}: the data dir is an emptyDir"
        limit = quantity(volume["emptyDir"]["sizeLimit"])
        if name == WORKER:
            assert limit >= concurrency * workspace, (limit, concurrency, workspace)
        else:
            assert limit >= 256 * 1024**2
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]


def test_termination_grace_period_covers_the_drain_timeout() -> None:
    docs = render("overlays/production")
    for name in DEPLOYMENTS:
        deployment = find(docs, "Deployment", name)
        spec = deployment["spec"]["template"]["spec"]
        container = container_of(docs, name)
        env = env_of(container)
        drain = Settings.model_fields["drain_timeout"].default
        if "QUARTERDECK_DRAIN_TIMEOUT" in env:
            from quarterdeck.kit.durations import parse_duration

            drain = parse_duration(env["QUARTERDECK_DRAIN_TIMEOUT"]["value"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        command = pre_stop.get("command", [])
        pre_stop_seconds = float(command[-1]) if command and command[0] == "sleep" else 0.0
        assert spec["terminationGracePeriodSeconds"] > drain + pre_stop_seconds, name
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        assert container["resources"] == {
            "requests": {"memory": "512Mi", "cpu": "250m"},
            "limits": {"memory": "2Gi", "cpu": "1000m"},
        }
    # The API sits behind a Service: a preStop pause lets endpoints drop it before SIGTERM.
    assert api(docs)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_hpa_scales_the_workers_on_a_metric_the_adapter_produces_from_a_real_one() -> None:
    docs = render("overlays/production")
    hpa = find(docs, "HorizontalPodAutoscaler", "claude-agent-hpa")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": WORKER,
    }
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"] == [
        "claude-agent-hpa"
    ], "one HPA, on the workers"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    # The HPA owns the count: a `replicas` in the manifest would reset it on every apply.
    assert "replicas" not in find(docs, "Deployment", WORKER)["spec"]
    pod_metrics = {
        m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"
    }
    assert pod_metrics == {"claude_agent_runs_in_flight"}

    adapter = find(render("prometheus-adapter"), "ConfigMap", "adapter-config")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    values = yaml.safe_load((KUBE / "prometheus-adapter" / "values.yaml").read_text())
    assert values["rules"]["custom"] == rules, "Helm values and ConfigMap rules differ"
    produced = {r["name"]["as"]: r for r in rules}
    assert pod_metrics <= set(produced)
    rule = produced["claude_agent_runs_in_flight"]
    series = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"])
    assert series is not None and series.group(1) in registry_series()
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # A gauge (runs in flight), summed per pod over its agent types: no rate().
    assert "rate(" not in rule["metricsQuery"] and rule["metricsQuery"].startswith("sum(")


# ------------------------------------------------------------------- guide defects fixed
def test_redis_password_comes_from_a_secret_and_not_from_the_conf() -> None:
    docs = render("overlays/production")
    conf = find(docs, "ConfigMap", "redis-config")["data"]["redis.conf"]
    assert "$" not in conf, "redis.conf does not expand environment variables"
    assert not re.search(r"^\s*requirepass", conf, flags=re.M)
    maxmemory = re.search(r"^maxmemory (\d+)mb", conf, flags=re.M)
    assert maxmemory is not None and int(maxmemory.group(1)) < 2048, "leave headroom under 2Gi"
    statefulset = find(docs, "StatefulSet", "redis-cluster")
    spec = statefulset["spec"]["template"]["spec"]
    redis = spec["containers"][0]
    assert "env" not in redis, "the password is a file, not an environment variable"
    mount = next(m for m in redis["volumeMounts"] if m["name"] == "redis-secret")
    volume = next(v for v in spec["volumes"] if v["name"] == "redis-secret")
    assert volume["secret"]["secretName"] == "redis-secrets"
    assert volume["secret"]["defaultMode"] == 0o400 and mount["readOnly"] is True
    password_file = f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    script = "\n".join(redis["args"])
    assert "requirepass" in script and f'"$(cat {password_file})"' in script
    assert "export" not in script, "the password stays a shell variable, out of redis's environ"
    assert password_file in " ".join(redis["readinessProbe"]["exec"]["command"])
    # The headless Service the StatefulSet names exists.
    service = find(docs, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    # Quarterdeck gets the same Secret's password as its own file, and a password-free URL.
    for name in DEPLOYMENTS:
        redis_url = env_of(container_of(docs, name))["REDIS_URL"]["value"]
        assert (
            redis_url.startswith("redis://redis-cluster-0.redis-cluster.") and "@" not in redis_url
        )
        assert secret_files(docs, name)["redis_password"] == ("redis-secrets", "password", False)


def test_rbac_is_least_privilege() -> None:
    """The base's only API calls are the leader Leases (health/lease.py); the scaler's own
    calls have their own account and Role (components/scaler, test_deploy_scaling.py)."""
    docs = render("overlays/production")
    role = find(docs, "Role", "claude-agent")
    grants = {
        (g, r, v, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    # read_namespaced_lease -> get, create_namespaced_lease -> create, replace -> update; get
    # and update only on the elector's own Lease.
    # The scaler elects its leader on a Lease of its own (scaling/wiring.py).
    from quarterdeck.scaling.wiring import SCALER_LEASE

    lease = (inspect.signature(LeaseElector).parameters["name"].default, SCALER_LEASE)
    assert grants == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", lease),
        ("coordination.k8s.io", "leases", "update", lease),
    }
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    binding = find(docs, "RoleBinding", "claude-agent")
    account = find(docs, "ServiceAccount", "claude-agent")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    for name in DEPLOYMENTS:
        deployment = find(docs, "Deployment", name)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "claude-agent"


def test_pdb_and_namespace() -> None:
    docs = render("overlays/production")
    assert find(docs, "Namespace", "ai-agents")
    for name in DEPLOYMENTS:  # one PDB per Deployment, each selecting exactly its pods
        pdb = find(docs, "PodDisruptionBudget", name)
        deployment = find(docs, "Deployment", name)
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["selector"]["matchLabels"] == selector
        assert pdb["spec"]["maxUnavailable"] == 1
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "ai-agents"
    }


def test_guide_env_names_are_still_what_settings_reads() -> None:
    assert set(GUIDE_ENV_NAMES.values()) == {
        "POSTGRES_URL",
        "REDIS_URL",
        "ANTHROPIC_API_KEY",
        "LOG_LEVEL",
    }


# ------------------------------------------------------------------------------- Dockerfile
def dockerfile_stages() -> list[dict[str, Any]]:
    """Split the Dockerfile into stages of (instruction, argument) pairs, joining continuations."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = argument.split()
            stages.append(
                {"from": parts[0], "name": parts[2] if len(parts) > 2 else None, "lines": []}
            )
        elif stages:
            stages[-1]["lines"].append((instruction, argument.strip()))
    return stages


# The shared libraries WeasyPrint loads (the Makefile installs the same ones for `make deps`).
PDF_LIBRARIES = {
    "libpango-1.0-0",
    "libpangoft2-1.0-0",
    "libharfbuzz-subset0",
    "libfontconfig1",
    "fonts-dejavu-core",
}


def test_dockerfile_is_multi_stage_and_the_final_stage_is_lean() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert re.fullmatch(
        r"python:\$\{PYTHON_VERSION\}-slim|python:3\.11(\.\d+)?-slim", final["from"]
    ), final["from"]
    assert "ARG PYTHON_VERSION=3.11" in (ROOT / "Dockerfile").read_text()
    assert any(i == "RUN" and "pip wheel" in a for i, a in builder["lines"])
    final_runs = " ".join(a for i, a in final["lines"] if i == "RUN")
    for tool_name in ("gcc", "build-essential", "g++", "make "):
        assert tool_name not in final_runs, f"final stage installs {tool_name}"
    # Only runtime packages may be installed: git records workspace baselines and diffs.
    installed = set()
    for match in re.finditer(r"apt-get install ([^&;]+)", final_runs):
        installed |= {w for w in match.group(1).split() if not w.startswith("-")}
    assert installed <= {"git", "ca-certificates", "bubblewrap", "socat", *PDF_LIBRARIES}, installed
    # bubblewrap gives agent commands the strong sandbox; socat bridges its egress socket.
    assert {"bubblewrap", "socat"} <= installed, "the image cannot run the strong sandbox"
    # WeasyPrint loads these at import: without them the monthly report's PDF answers 503.
    assert PDF_LIBRARIES <= installed, "the image cannot print the monthly report as PDF"
    makefile = (ROOT / "Makefile").read_text()
    assert all(lib in makefile for lib in PDF_LIBRARIES), "make deps and the image differ"
    env_text = " ".join(a for i, a in final["lines"] if i == "ENV")
    # matplotlib and fontconfig write caches: under a read-only root filesystem only /tmp works.
    assert "MPLCONFIGDIR=/tmp/" in env_text and "XDG_CACHE_HOME=/tmp/" in env_text
    assert "--no-index" in final_runs, "final stage installs only the builder's wheels"


def test_dockerfile_runtime_contract() -> None:
    final = dockerfile_stages()[-1]
    lines = final["lines"]
    users = [a for i, a in lines if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    healthchecks = [a for i, a in lines if i == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "python" in healthchecks[0] and "/health" in healthchecks[0]
    assert "curl" not in healthchecks[0] and "wget" not in healthchecks[0]
    exposed = {p for i, a in lines if i == "EXPOSE" for p in a.split()}
    assert exposed == {"8080", "9090"}
    env_text = " ".join(a for i, a in lines if i == "ENV")
    assert "QUARTERDECK_HTTP_HOST=0.0.0.0" in env_text
    for name in re.findall(r"(QUARTERDECK_[A-Z_]+)=", env_text):
        assert name in set(env_names().values()), name
    entry = [a for i, a in lines if i == "ENTRYPOINT"][-1]
    cmd = [a for i, a in lines if i == "CMD"][-1]
    assert entry == '["quarterdeck"]' and cmd in {'["up"]', '["serve"]'}


def test_dockerignore_keeps_the_context_small_but_buildable() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env"} <= patterns
    for needed in ("src", "pyproject.toml", "README.md"):
        assert needed not in patterns
