"""Replica splits, the weight they really give, nginx canary annotations, the status line."""

from __future__ import annotations

import pytest

from quarterdeck.rollouts.traffic import (
    CANARY_ANNOTATION,
    CANARY_WEIGHT_ANNOTATION,
    describe_split,
    effective_weight,
    nginx_canary_annotations,
    replica_split,
)


@pytest.mark.parametrize(
    ("total", "weight", "split"),
    [
        (3, 5, (1, 3)),  # the guide's minimum: a "5 %" canary is one pod beside three
        (3, 20, (1, 3)),
        (3, 50, (2, 3)),
        (3, 80, (3, 3)),
        (3, 100, (3, 0)),
        (10, 5, (1, 10)),
        (10, 41, (5, 10)),  # ceil, not nearest
        (10, 40, (4, 10)),
        (20, 5, (1, 20)),
        (1, 5, (1, 1)),
        (1, 100, (1, 0)),
        (4, 0, (0, 4)),
        (0, 50, (0, 0)),
    ],
)
def test_replica_split(total: int, weight: int, split: tuple[int, int]) -> None:
    assert replica_split(total, weight) == split


def test_canary_gets_at_least_one_pod_and_stable_stays_whole() -> None:
    for weight in range(1, 100):
        for total in (1, 2, 3, 7, 10):
            canary, stable = replica_split(total, weight)
            assert 1 <= canary <= total
            assert stable == total
            assert canary * 100 >= total * weight  # never fewer pods than asked


@pytest.mark.parametrize(("total", "weight"), [(3, -1), (3, 101), (-1, 5), (3, True)])
def test_replica_split_refuses_nonsense(total: int, weight: int) -> None:
    with pytest.raises(ValueError):
        replica_split(total, weight)


def test_effective_weight() -> None:
    assert effective_weight(1, 3) == 25.0
    assert effective_weight(1, 2) == pytest.approx(100 / 3)
    assert effective_weight(3, 0) == 100.0
    assert effective_weight(0, 3) == 0.0
    assert effective_weight(0, 0) == 0.0
    with pytest.raises(ValueError):
        effective_weight(-1, 3)
    # at 20 replicas a 5 % step is close to 5 %; at 3 it is five times that
    assert effective_weight(*replica_split(20, 5)) == pytest.approx(100 / 21)
    assert effective_weight(*replica_split(3, 5)) == 25.0


def test_nginx_annotations_are_strings() -> None:
    assert nginx_canary_annotations(5) == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "5",
    }
    full = nginx_canary_annotations(100)
    assert full[CANARY_WEIGHT_ANNOTATION] == "100"
    # weight 0: still the canary Ingress, sending it nothing (the rollback state)
    assert nginx_canary_annotations(0) == {CANARY_ANNOTATION: "true", CANARY_WEIGHT_ANNOTATION: "0"}
    for value in nginx_canary_annotations(37).values():
        assert isinstance(value, str)
    with pytest.raises(ValueError):
        nginx_canary_annotations(101)


def test_describe_split_says_the_real_weight() -> None:
    assert (
        describe_split("replicas", 5, 3)
        == "replicas: 1 canary of 4 pods, really 25 % for a 5 % step"
    )
    assert describe_split("replicas", 80, 3) == (
        "replicas: 3 canary of 6 pods, really 50 % for a 80 % step"
    )
    assert describe_split("replicas", 50, 2) == (
        "replicas: 1 canary of 3 pods, really 33.3 % for a 50 % step"
    )
    assert describe_split("replicas", 100, 3) == "replicas: 3 canary of 3 pods, 100 % as asked"
    assert (
        describe_split("nginx", 5, 3) == "nginx: canary-weight 5 % of requests (1 canary of 4 pods)"
    )
    with pytest.raises(ValueError, match="auto"):
        describe_split("auto", 5, 3)
