"""The kinds of value settings hold, each an annotated type that carries its own validation.

Apart from :mod:`quarterdeck.config.settings` so the field list reads as a list: a field says
what it is (``Duration``, ``RedisUrl``, ``HostList``) where it is declared, rather than in a
validator a hundred lines further down naming it among two dozen others. The validators run
exactly as the class's own ``field_validator`` methods did: ``before`` for values parsed from
text (durations, lists from the environment, latency specs), ``after`` for the Redis and
Postgres URLs and the Redis password, checked once typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr, ValidationInfo
from pydantic_settings import NoDecode

from quarterdeck.config.sources import comma_or_json_list
from quarterdeck.kit.durations import parse_duration
from quarterdeck.kit.latency import parse_latency
from quarterdeck.metrics import LABEL_VALUE


def positive_seconds(value: Any) -> float:
    """``250ms``, ``2s``, ``5m``, ``1h``, ``7y`` or a number of seconds, which must be > 0."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def latency_spec(value: Any) -> str:
    """A simulated latency spec (``0``, ``2s``, ``lognormal:1.5s:0.6``), checked, kept as text."""
    parse_latency(str(value))
    return str(value)


def postgres_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not value.get_secret_value().startswith(
        ("postgres://", "postgresql://")
    ):
        raise ValueError("must start with postgresql:// (or postgres://)")
    return value


def redis_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not value.get_secret_value().startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value


def redis_password(value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
    """A password to add to REDIS_URL: that needs a REDIS_URL, and one carrying no password.

    Declared after ``redis_url``, so ``info.data`` holds the URL already validated (or lacks it
    when the URL itself was invalid, which is reported on its own)."""
    if value is None:
        return value
    url = info.data.get("redis_url")
    if url is None:
        if "redis_url" in info.data:  # absent from data: REDIS_URL itself was invalid
            raise ValueError("set REDIS_URL too (the password is added to it)")
        return value
    parsed = urlsplit(url.get_secret_value())
    if parsed.password or "password=" in parsed.query:
        raise ValueError("REDIS_URL already carries a password: set one or the other")
    return value


def host_list(value: Any) -> Any:
    """``a.example, *.b.example`` from the environment; a list from YAML or overrides."""
    if isinstance(value, str):
        value = [h.strip() for h in value.split(",") if h.strip()]
    if isinstance(value, list):
        for host in value:
            if not isinstance(host, str) or not host.strip() or any(c in host for c in " /@"):
                raise ValueError(f"{host!r} is not a host name or glob")
    return value


def label_list(value: Any) -> Any:
    """``task, review`` from the environment; a list from YAML or overrides. Each must be a
    value Prometheus label sets can hold as is (1-64 of letters, digits, ``_.:-``)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str) or not LABEL_VALUE.match(item):
                raise ValueError(
                    f"{item!r} is not a label value (1-64 of letters, digits, _ . : -)"
                )
    return value


Duration = Annotated[float, BeforeValidator(positive_seconds)]
"""Seconds, > 0, given as a number or a duration string."""
LatencySpec = Annotated[str, BeforeValidator(latency_spec)]
PostgresUrl = Annotated[SecretStr | None, AfterValidator(postgres_url)]
RedisUrl = Annotated[SecretStr | None, AfterValidator(redis_url)]
RedisPassword = Annotated[SecretStr | None, AfterValidator(redis_password)]
StrList = Annotated[list[str], NoDecode, BeforeValidator(comma_or_json_list)]
"""A list from the environment as ``a, b`` or as JSON (``["a", "b"]``)."""
PathList = Annotated[list[Path], NoDecode, BeforeValidator(comma_or_json_list)]
HostList = Annotated[list[str], NoDecode, BeforeValidator(host_list)]
LabelList = Annotated[list[str], NoDecode, BeforeValidator(label_list)]
