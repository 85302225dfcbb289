"""Kubernetes Lease leader election through the official client, against a local fake API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quarterdeck.health.lease import LeaseElector, kubernetes_api
from quarterdeck.kit.clock import FakeClock
from tests.support.fake_kubernetes import FakeKubernetes

pytestmark = pytest.mark.asyncio
PATH = "/apis/coordination.k8s.io/v1/namespaces/qd/leases/quarterdeck-health-monitor"


@pytest.fixture
def k8s(fake_k8s: FakeKubernetes) -> FakeKubernetes:
    fake_k8s.reset()
    return fake_k8s


def _clock() -> FakeClock:
    return FakeClock(wall=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


def elector(k8s: FakeKubernetes, who: str, clock: FakeClock) -> LeaseElector:
    return LeaseElector(
        kubernetes_api(k8s.base_url), "qd", identity=who, duration_s=15, clock=clock.wall
    )


async def test_one_replica_leads_and_the_other_follows(k8s: FakeKubernetes):
    clock = _clock()
    a, b = elector(k8s, "pod-a", clock), elector(k8s, "pod-b", clock)
    assert await a.step() == "create" and a.is_leader
    assert await b.step() == "follow" and not b.is_leader
    lease = k8s.leases[("qd", "quarterdeck-health-monitor")]
    assert lease["spec"]["holderIdentity"] == "pod-a"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    clock.advance(5)
    assert await a.step() == "renew" and a.is_leader
    writes = [r for r in k8s.requests if r.method in ("POST", "PUT")]
    assert [r.method for r in writes] == ["POST", "PUT"]
    assert writes[1].path == PATH
    assert writes[1].json["metadata"]["resourceVersion"]  # optimistic concurrency on the wire


async def test_a_dead_leaders_lease_is_taken_after_it_expires(k8s: FakeKubernetes):
    clock = _clock()
    a, b = elector(k8s, "pod-a", clock), elector(k8s, "pod-b", clock)
    await a.step()
    clock.advance(13)  # pod-a was SIGKILLed: it never renews again
    assert await b.step() == "follow", "the lease is still valid for 2 s"
    assert not a.is_leader, "a leader that cannot renew steps down before the lease expires"
    clock.advance(2)
    assert await b.step() == "take" and b.is_leader
    spec = k8s.leases[("qd", "quarterdeck-health-monitor")]["spec"]
    assert spec["holderIdentity"] == "pod-b" and spec["leaseTransitions"] == 1


async def test_stop_releases_the_lease_for_an_immediate_successor(k8s: FakeKubernetes):
    clock = _clock()
    a, b = elector(k8s, "pod-a", clock), elector(k8s, "pod-b", clock)
    await a.step()
    await a.stop()
    assert not a.is_leader
    assert await b.step() == "take" and b.is_leader


async def test_a_conflict_leaves_the_loser_a_follower(k8s: FakeKubernetes):
    clock = _clock()
    a = elector(k8s, "pod-a", clock)
    await a.step()
    clock.advance(20)
    b = elector(k8s, "pod-b", clock)
    original = b.api.replace_namespaced_lease

    def racing_replace(name, namespace, body):  # another replica writes between read and PUT
        k8s.leases[("qd", name)]["metadata"]["resourceVersion"] = "999999"
        return original(name, namespace, body)

    b.api.replace_namespaced_lease = racing_replace
    assert await b.step() == "follow" and not b.is_leader
    conflicts = [r for r in k8s.requests if r.method == "PUT"]
    assert conflicts, "the losing PUT reached the API server"


async def test_the_runtime_elects_through_the_lease_when_configured(
    k8s: FakeKubernetes, make_settings
):
    from quarterdeck.runtime import Runtime

    rt = Runtime(
        make_settings(
            health_leader_backend="kubernetes",
            kubernetes_api_url=k8s.base_url,
            kubernetes_namespace="qd",
        )
    )
    await rt.start()
    try:
        assert await rt.leader.wait_until(True, 10)
        spec = k8s.leases[("qd", "quarterdeck-health-monitor")]["spec"]
        assert spec["holderIdentity"]
    finally:
        await rt.stop()
    assert k8s.leases[("qd", "quarterdeck-health-monitor")]["spec"].get("holderIdentity") is None
