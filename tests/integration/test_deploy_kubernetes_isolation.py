"""The shipped Kubernetes manifests keep every secret away from agent commands (issue 14).

Each claim of deploy/kubernetes/README.md ("Isolation") is checked on the rendered manifests
(``kubectl kustomize``) of both overlays and of the two opt-in components:

* no container gets a secret through its environment (no ``secretKeyRef``, no ``envFrom``
  secrets, no literal secret): secrets are files, mode 0400 (0440 with the pod's fsGroup), named
  by the setting they fill, in the directory ``Settings`` reads (and it does read them);
* no pod mounts a service-account token, except with the Lease component, which needs one;
* the worker pod (the one that runs agent commands) is set up for bubblewrap: a user namespace (``hostUsers: false``), an
  unmasked ``/proc``, the shipped Localhost seccomp profile, no capabilities, no privilege
  escalation, ``QUARTERDECK_SANDBOX_MODE=bwrap`` so it fails closed; the namespace enforces
  Pod Security ``baseline`` (what that allows) and audits ``restricted``;
* the egress NetworkPolicy (API and worker pods) lets out exactly DNS, Postgres, Redis and HTTPS
  to public addresses, evaluated on addresses (metadata service and private networks refused);
  workers get one way more, the gateway on the API pods, which their
  ``QUARTERDECK_AGENT_GATEWAY_URL`` names (claude-code runs' model calls);
* the weak-sandbox fallback says what it is (and keeps the secrets out of the environment).

What the seccomp profile and the unmasked ``/proc`` do on a real kernel is proved by
tests/e2e/test_kubernetes_pod.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any, get_args

import kubernetes_validate
import pytest

from quarterdeck import config
from quarterdeck.config import SECRET_FIELDS, Settings, env_name, load_settings, secret_file_fields
from tests.integration.test_deploy_kubernetes import (
    API,
    CRD_KINDS,
    DEPLOYMENTS,
    K8S_VERSION,
    KUBE,
    ROOT,
    WORKER,
    container_of,
    env_of,
    find,
    render,
    secret_files,
    worker,
)

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
SECCOMP_DIR = KUBE / "node" / "seccomp"
BUNDLES = ["overlays/production", "overlays/dev", "production+lease", "production+weak"]
COMPONENTS = {"lease": "components/kubernetes-lease", "weak": "components/weak-sandbox"}


def bundle(name: str, tmp_root: Path) -> list[dict[str, Any]]:
    """An overlay, or ``production+<component>`` rendered through a throwaway kustomization."""
    if "+" not in name:
        return render(name)
    base, component = name.split("+")
    directory = tmp_root / name
    directory.mkdir(parents=True, exist_ok=True)
    overlay = os.path.relpath(KUBE / "overlays" / base, directory)  # kustomize: no absolute
    extra = os.path.relpath(KUBE / COMPONENTS[component], directory)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{overlay}]\ncomponents: [{extra}]\n"
    )
    return render(directory)


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kustomize")


@pytest.mark.parametrize("name", ["production+lease", "production+weak"])
def test_the_components_render_valid_kubernetes(name: str, tmp_root: Path) -> None:
    for doc in bundle(name, tmp_root):
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            template = doc["spec"].get("jobTemplate", {}).get("spec", doc["spec"])["template"]
            specs[f"{doc['kind']}/{doc['metadata']['name']}"] = template["spec"]
    return specs


def worker_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return pod_specs(docs)[f"Deployment/{WORKER}"]


# --------------------------------------------------------------- secrets: files, never env
@pytest.mark.parametrize("name", BUNDLES)
def test_no_container_gets_a_secret_through_its_environment(name: str, tmp_root: Path) -> None:
    # REDIS_URL may carry a password, so it is a secret setting; here it carries none (the
    # credentials check below), its password being the file redis_password.
    names = SECRET_FIELDS - {"redis_url"}
    secret_env_names = {env_name(f) for f in names} | {f"QUARTERDECK_{f.upper()}" for f in names}
    specs = pod_specs(bundle(name, tmp_root))
    assert specs
    for workload, spec in specs.items():
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{workload}/{container['name']}"
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, where
            for var in container.get("env", []):
                assert "secretKeyRef" not in var.get("valueFrom", {}), f"{where}: {var['name']}"
                assert var["name"] not in secret_env_names, f"{where}: {var['name']} is a secret"
                assert not re.search(r"://[^/@]*:[^/@]*@", var.get("value", "")), (
                    f"{where}: {var['name']} carries credentials"
                )


@pytest.mark.parametrize("name", BUNDLES)
def test_secret_volumes_are_0400_and_readable_by_the_pods_own_group_only(
    name: str, tmp_root: Path
) -> None:
    for workload, spec in pod_specs(bundle(name, tmp_root)).items():
        context = spec["securityContext"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                mode, items = volume["secret"].get("defaultMode"), volume["secret"]["items"]
            elif "projected" in volume and any(
                "secret" in s for s in volume["projected"]["sources"]
            ):
                mode = volume["projected"].get("defaultMode")
                items = [i for s in volume["projected"]["sources"] for i in s["secret"]["items"]]
            else:
                continue
            assert mode == 0o400, f"{workload}: volume {volume['name']} mode {mode}"
            assert all("mode" not in item for item in items), f"{workload}: {volume['name']}"
            # The kubelet adds group read for fsGroup: 0440 root:<fsGroup>, and nobody else.
            assert context["fsGroup"] == context["runAsGroup"] != 0, workload
            assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, workload
            for container in spec["containers"]:
                for mount in container.get("volumeMounts", []):
                    if mount["name"] == volume["name"]:
                        assert mount.get("readOnly") is True, f"{workload}: {mount['name']}"


def test_quarterdeck_pods_run_as_the_images_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)", dockerfile, flags=re.M)[-1]
    specs = pod_specs(render("overlays/production"))
    for name in DEPLOYMENTS:
        context = specs[f"Deployment/{name}"]["securityContext"]
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user, name


@pytest.mark.parametrize("overlay", ["overlays/production", "overlays/dev"])
def test_secret_files_are_secret_settings_that_quarterdeck_reads(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(overlay)
    files = secret_files(docs)
    assert files and set(files) <= set(secret_file_fields()), set(files) - set(secret_file_fields())
    container = worker(docs)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount["mountPath"] == env_of(container)["QUARTERDECK_SECRETS_DIR"]["value"]
    assert Path(mount["mountPath"]) == config.DEFAULT_SECRETS_DIR
    # And Settings really takes each of them from such a directory.
    for var in [*Settings.model_fields, "QUARTERDECK_CONFIG"]:
        monkeypatch.delenv(env_name(var) if var in Settings.model_fields else var, raising=False)
    values = {
        "postgres_url": "postgresql://qd:pw@db:5432/qd",
        "redis_password": "redis-pw",
        "audit_master_key": "A" * 43 + "=",
    }
    directory = tmp_path / "secrets"
    directory.mkdir()
    for name in files:
        (directory / name).write_text(values.get(name, f"{name}-value-{'x' * 32}") + "\n")
    monkeypatch.setenv("QUARTERDECK_SECRETS_DIR", str(directory))
    monkeypatch.setenv("REDIS_URL", env_of(container)["REDIS_URL"]["value"])
    settings = load_settings(None)
    for name in files:
        value = getattr(settings, name)
        assert value is not None, name
        if name != "redis_password":
            assert value.get_secret_value() == values.get(name, f"{name}-value-{'x' * 32}")
    assert settings.redis_url is not None and ":redis-pw@" in settings.redis_url.get_secret_value()


def test_the_metrics_scrape_sends_the_token_the_listener_reads() -> None:
    docs = render("overlays/production")
    assert secret_files(docs)["metrics_token"] == ("quarterdeck-metrics", "token", False)
    endpoint = find(docs, "ServiceMonitor", "claude-agent")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "quarterdeck-metrics", "key": "token"},
    }
    assert "metrics_token" not in secret_files(render("overlays/dev")), "dev: open, no monitor"


@pytest.mark.parametrize("name", BUNDLES)
def test_every_mount_has_its_volume_and_every_volume_is_mounted(name: str, tmp_root: Path) -> None:
    """Strategic-merge patches can drop mounts silently (volumeMounts merge on mountPath)."""
    docs = bundle(name, tmp_root)
    claims = {
        t["metadata"]["name"]
        for d in docs
        if d["kind"] == "StatefulSet"
        for t in d["spec"].get("volumeClaimTemplates", [])
    }
    for workload, spec in pod_specs(docs).items():
        volumes = {v["name"] for v in spec.get("volumes", [])}
        mounted = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert mounted - claims <= volumes, f"{workload}: {mounted - volumes}"
        assert volumes <= mounted, f"{workload}: unmounted {volumes - mounted}"


# ------------------------------------------------------------- service-account token
@pytest.mark.parametrize("name", ["overlays/production", "overlays/dev", "production+weak"])
def test_no_pod_mounts_a_service_account_token(name: str, tmp_root: Path) -> None:
    docs = bundle(name, tmp_root)
    for workload, spec in pod_specs(docs).items():
        assert spec.get("automountServiceAccountToken") is False, workload
    for account in (d for d in docs if d["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_the_lease_component_mounts_the_token_only_where_the_lease_needs_it(
    tmp_root: Path,
) -> None:
    docs = bundle("production+lease", tmp_root)
    specs = pod_specs(docs)
    for name in DEPLOYMENTS:  # every process takes part in the election
        assert specs.pop(f"Deployment/{name}")["automountServiceAccountToken"] is True, name
        env = env_of(container_of(docs, name))
        assert env["QUARTERDECK_HEALTH_LEADER_BACKEND"]["value"] == "kubernetes"
    assert "kubernetes" in get_args(Settings.model_fields["health_leader_backend"].annotation)
    policy = find(docs, "NetworkPolicy", "claude-agent-kubernetes-api")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {443, 6443}
    cidrs = [peer["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for peer in r["to"]]
    assert cidrs == ["192.0.2.10/32"], "a documentation address the operator must replace"


# ------------------------------------------------------------- a pod bubblewrap can run in
@pytest.mark.parametrize("overlay", ["overlays/production", "overlays/dev"])
def test_the_worker_pod_is_set_up_for_bubblewrap(overlay: str) -> None:
    docs = render(overlay)
    spec = worker_pod(docs)
    container = worker(docs)
    assert spec["hostUsers"] is False
    assert container["securityContext"]["procMount"] == "Unmasked"
    seccomp = spec["securityContext"]["seccompProfile"]
    assert seccomp["type"] == "Localhost"
    assert (SECCOMP_DIR / seccomp["localhostProfile"]).is_file()
    assert "seccompProfile" not in container["securityContext"], "one profile, the pod's"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    mode = env_of(container)["QUARTERDECK_SANDBOX_MODE"]["value"]
    assert mode == "bwrap", "fail closed: no bubblewrap, no start"
    assert mode in get_args(Settings.model_fields["sandbox_mode"].annotation)


def test_the_namespace_enforces_baseline_and_audits_restricted() -> None:
    labels = find(render("overlays/production"), "Namespace", "ai-agents")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_the_seccomp_profile_allows_bubblewrap_and_denies_the_escape_hatches() -> None:
    profile = json.loads((SECCOMP_DIR / "quarterdeck" / "bwrap.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"} <= set(profile["architectures"])
    assert {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"} <= set(profile["architectures"])
    (rule,) = profile["syscalls"]
    assert (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", 1)
    denied = set(rule["names"])
    # What bubblewrap needs, and RuntimeDefault withholds without CAP_SYS_ADMIN/CAP_SYS_CHROOT.
    assert not denied & {"clone", "clone3", "unshare", "mount", "umount2", "pivot_root", "chroot"}
    assert not denied & {"sethostname", "prctl", "capset", "setresuid", "seccomp"}
    assert {
        "open_by_handle_at",
        "ptrace",
        "process_vm_readv",
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "setns",
        "kexec_load",
        "init_module",
        "finit_module",
        "io_uring_setup",
        "mount_setattr",
        "open_tree",
    } <= denied
    readme = (KUBE / "README.md").read_text()
    assert f"except {len(denied)} calls" in readme, "deploy/kubernetes/README.md says how many"
    # Every name is a real system call (a typo would silently deny nothing).
    known: set[str] = set()
    for header in ("unistd_64.h", "unistd_32.h"):
        path = Path("/usr/include/x86_64-linux-gnu/asm") / header
        if path.exists():
            known |= set(re.findall(r"#define __NR_(\w+)", path.read_text()))
    if not known:
        pytest.skip("kernel headers (linux-libc-dev) are not installed")
    assert denied <= known | {"_sysctl"}, denied - known


# ----------------------------------------------------------------------- NetworkPolicy
def egress_allows(policy: dict[str, Any], address: str, port: int) -> bool:
    """Whether ``policy`` lets the pod open TCP to ``address``:``port`` (IP peers only)."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        if port not in {p["port"] for p in rule.get("ports", [{"port": port}])}:
            continue
        if "to" not in rule:
            return True
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block is None:
                continue  # a namespace/pod selector: cluster pods, not an address we test
            network = ipaddress.ip_network(block["cidr"])
            if ip.version != network.version or ip not in network:
                continue
            if not any(ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                return True
    return False


def test_network_policy_egress_is_exactly_as_documented() -> None:
    docs = render("overlays/production")
    policy = find(docs, "NetworkPolicy", "claude-agent-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app": "claude-agent"}
    egress_policies = [
        d for d in docs if d["kind"] == "NetworkPolicy" and "Egress" in d["spec"]["policyTypes"]
    ]
    # One egress policy for API and worker pods alike, and the workers' one addition (the
    # gateway on the API pods: test_workers_reach_the_gateway_on_the_api_pods_only).
    assert egress_policies == [policy, find(docs, "NetworkPolicy", WORKER)]
    rules = policy["spec"]["egress"]
    assert all(rule.get("ports") for rule in rules), "no all-ports egress"
    shape = sorted(
        (
            tuple(sorted((p["port"], p.get("protocol", "TCP")) for p in rule["ports"])),
            tuple(sorted(k for peer in rule.get("to", []) for k in peer)),
        )
        for rule in rules
    )
    assert shape == [
        (((53, "TCP"), (53, "UDP")), ("namespaceSelector",)),  # DNS in kube-system
        (((443, "TCP"),), ("ipBlock", "ipBlock")),  # HTTPS, public v4 and v6 only
        (((5432, "TCP"),), ()),  # Postgres anywhere (managed databases)
        (((6379, "TCP"),), ("podSelector",)),  # Redis in this namespace
    ]
    dns = next(r for r in rules if r["ports"][0]["port"] == 53)
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    redis = next(r for r in rules if r["ports"][0]["port"] == 6379)
    assert redis["to"] == [{"podSelector": {"matchLabels": {"app": "redis"}}}]
    # HTTPS: the LLM API (Anthropic publishes 160.79.104.0/23) yes; metadata, private, no.
    assert egress_allows(policy, "160.79.104.10", 443)
    assert egress_allows(policy, "2607:6bc0::10", 443)
    for refused in (
        "169.254.169.254",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "127.0.0.1",
        "fd00::1",
        "fe80::1",
        "::1",
    ):
        assert not egress_allows(policy, refused, 443), refused
    # Nothing but these ports leaves the pod, to any address.
    for port in (22, 80, 2375, 6443, 8080, 10250):
        assert not egress_allows(policy, "160.79.104.10", port), port
        assert not egress_allows(policy, "10.0.0.1", port), port
    # Ingress: the API takes 8080 and 9090, a worker only 9090 (it serves no API).
    for name, ports in ((API, {8080, 9090}), (WORKER, {9090})):
        ingress = find(docs, "NetworkPolicy", name)
        assert "Ingress" in ingress["spec"]["policyTypes"]
        assert (
            ingress["spec"]["podSelector"]["matchLabels"]
            == find(docs, "Deployment", name)["spec"]["selector"]["matchLabels"]
        )
        assert {p["port"] for rule in ingress["spec"]["ingress"] for p in rule["ports"]} == ports


def selects(selector: dict[str, Any], docs: list[dict[str, Any]], deployment: str) -> bool:
    labels = find(docs, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    return bool(selector["matchLabels"].items() <= labels.items())


def test_workers_reach_the_gateway_on_the_api_pods_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A claude-code run's CLI calls the model through the gateway, which the API pods serve; a
    worker serves none. So the worker's QUARTERDECK_AGENT_GATEWAY_URL is the API Service, and the
    policies open exactly that path: worker egress to API pods on 8080, API ingress from them."""
    from quarterdeck.agents.claude_code.bridge import gateway_address
    from quarterdeck.agents.claude_code.plan import gateway_url

    docs = render("overlays/production")
    url = env_of(worker(docs))["QUARTERDECK_AGENT_GATEWAY_URL"]["value"]
    assert "QUARTERDECK_AGENT_GATEWAY_URL" not in env_of(container_of(docs, API))
    for var in set(config.env_names().values()) | {"QUARTERDECK_CONFIG"}:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUARTERDECK_AGENT_GATEWAY_URL", url)
    host, port = gateway_address(gateway_url(load_settings(None)))
    # The URL names the API Service by its cluster DNS name and port...
    service = find(docs, "Service", "claude-agent-service")
    assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    (service_port,) = service["spec"]["ports"]
    assert port == service_port["port"]
    assert selects({"matchLabels": service["spec"]["selector"]}, docs, API)
    ports = {p["name"]: p["containerPort"] for p in container_of(docs, API)["ports"]}
    pod_port = ports[service_port["targetPort"]]
    # ...the workers' own policy adds exactly that way out: the API pods' port, nothing else...
    egress = find(docs, "NetworkPolicy", WORKER)["spec"]["egress"]
    assert [r["ports"] for r in egress] == [[{"port": pod_port, "protocol": "TCP"}]]
    (peer,) = egress[0]["to"]
    assert set(peer) == {"podSelector"} and selects(peer["podSelector"], docs, API)
    assert not selects(peer["podSelector"], docs, WORKER), "not other workers"
    # ...and the API pods let the workers in on it (and only on it).
    ingress = find(docs, "NetworkPolicy", API)["spec"]["ingress"]
    from_workers = [
        {p["port"] for p in rule["ports"]}
        for rule in ingress
        for peer in rule["from"]
        if "podSelector" in peer and selects(peer["podSelector"], docs, WORKER)
    ]
    assert from_workers == [{pod_port}]
    # Dev runs `up`, which serves the gateway itself: the default, its own port on loopback.
    dev = env_of(worker(render("overlays/dev")))
    assert "QUARTERDECK_AGENT_GATEWAY_URL" not in dev
    monkeypatch.delenv("QUARTERDECK_AGENT_GATEWAY_URL")
    monkeypatch.setenv("QUARTERDECK_HTTP_PORT", dev["QUARTERDECK_HTTP_PORT"]["value"])
    assert gateway_url(load_settings(None)) == f"http://127.0.0.1:{pod_port}"


# ------------------------------------------------------------------- the weak fallback
def test_the_weak_sandbox_fallback_is_explicit_and_restricted(tmp_root: Path) -> None:
    docs = bundle("production+weak", tmp_root)
    spec, container = worker_pod(docs), worker(docs)
    assert "hostUsers" not in spec
    assert "procMount" not in container["securityContext"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    env = env_of(container)
    assert env["QUARTERDECK_SANDBOX_MODE"]["value"] == "auto"
    assert env["QUARTERDECK_SANDBOX_ALLOW_WEAK"]["value"] == "true"
    assert {"QUARTERDECK_SANDBOX_MODE", "QUARTERDECK_SANDBOX_ALLOW_WEAK"} <= {
        env_name(f) for f in Settings.model_fields
    }
    # Without the unmasked /proc nothing needs baseline any more: restricted is enforced again.
    labels = find(docs, "Namespace", "ai-agents")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert secret_files(docs) == secret_files(render("overlays/production"))
