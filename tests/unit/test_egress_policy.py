"""The egress proxy's pure host decisions, its bit of HTTP, and the settings and template flag
that turn it on."""

from __future__ import annotations

import pytest

from quarterdeck.agents.egress.http import (
    EgressRequestError,
    RequestHead,
    destination,
    forwarded_head,
    parse_head,
)
from quarterdeck.agents.egress.policy import EgressPolicy, address_refusal, connect_order
from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.config import load_settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.security.policy import PolicyGate


@pytest.fixture(scope="module")
def gate() -> PolicyGate:
    return PolicyGate.load()


@pytest.fixture(scope="module")
def policy(gate: PolicyGate) -> EgressPolicy:
    return EgressPolicy(["pypi.org", "*.pythonhosted.org", "localhost", "pastebin.com", "*"], gate)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f.1",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "169.254.169.254",
        "2852039166",  # 169.254.169.254
        "0xA9FEA9FE",
        "::1",
        "[::1]",
        "fd00:ec2::254",
        "[fd00:ec2::254]",
        "::ffff:169.254.169.254",
        "8.8.8.8",
        "999.1.1.1",  # not an address, not a name either
        "1.2.3.4.5",
    ],
)
def test_ip_literals_in_every_spelling_are_refused(policy: EgressPolicy, host: str) -> None:
    verdict = policy.check_host(host, 443)
    assert not verdict.allowed
    assert verdict.rule_id == "egress.raw-ip"


@pytest.mark.parametrize(
    ("host", "rule"),
    [
        ("metadata.google.internal", "egress.cloud-metadata"),
        ("METADATA.google.internal.", "egress.cloud-metadata"),
        ("metadata", "egress.cloud-metadata"),
        ("localhost", "egress.local-name"),  # allowlisted by name, still this machine
        ("db.localhost", "egress.local-name"),
        ("10.0.0.1.nip.io", "egress.local-name"),
        ("pastebin.com", "egress.paste-site"),  # the gate's deny beats the allowlist
        ("webhook.site", "egress.exfil-sink"),
        ("evil.tk", "egress.blocked-tld"),
        ("exa mple.com", "egress.bad-host"),
        ("ex\x00ample.com", "egress.bad-host"),
        ("bücher.de", "egress.bad-host"),
        ("-bad.example.com", "egress.bad-host"),
        ("", "egress.bad-host"),
    ],
)
def test_denied_and_local_names_are_refused(policy: EgressPolicy, host: str, rule: str) -> None:
    verdict = policy.check_host(host, 443)
    assert (verdict.allowed, verdict.rule_id) == (False, rule), verdict


def test_metadata_names_are_refused_without_any_gate() -> None:
    bare = EgressPolicy(["*"])
    assert bare.check_host("metadata.google.internal", 80).rule_id == "egress.cloud-metadata"
    assert bare.check_host("example.com", 80).allowed


def test_allowlist_globs_and_subdomains(gate: PolicyGate) -> None:
    policy = EgressPolicy(["pypi.org", "*.pythonhosted.org"], gate)
    assert policy.check_host("pypi.org", 443).allowed
    assert policy.check_host("upload.pypi.org", 443).allowed
    assert policy.check_host("files.pythonhosted.org", 443).allowed
    refused = policy.check_host("evil.example", 443)
    assert (refused.allowed, refused.rule_id) == (False, "egress.not-allowed")
    assert "not in egress_allowed_hosts" in refused.reason
    assert not policy.check_host("pypi.org.evil.example", 443).allowed


def test_empty_allowlist_denies_everything(gate: PolicyGate) -> None:
    verdict = EgressPolicy([], gate).check_host("pypi.org", 443)
    assert not verdict.allowed and "empty: no host is allowed" in verdict.reason


def test_gate_flag_allows_but_names_the_rule(gate: PolicyGate) -> None:
    verdict = EgressPolicy(["github.com"], gate).check_host("gist.github.com", 443)
    assert verdict.allowed and verdict.rule_id == "egress.gist"


def test_gate_allowlist_mode_governs_the_proxy_too() -> None:
    gate = PolicyGate.load(egress_mode="allowlist", egress_allowlist=["pypi.org"])
    policy = EgressPolicy(["pypi.org", "example.com"], gate)
    assert policy.check_host("pypi.org", 443).allowed
    assert policy.check_host("example.com", 443).rule_id == "egress.not-allowlisted"


def test_bad_port_is_refused(policy: EgressPolicy) -> None:
    assert policy.check_host("pypi.org", 0).rule_id == "egress.bad-port"
    assert policy.check_host("pypi.org", 70000).rule_id == "egress.bad-port"


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.0.1",
        "169.254.169.254",
        "100.100.100.200",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "2002:a9fe:a9fe::1",  # 6to4 around 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    ],
)
def test_non_public_addresses_are_refused(ip: str) -> None:
    assert address_refusal(ip) is not None


def test_public_addresses_pass() -> None:
    assert address_refusal("93.184.216.34") is None
    assert address_refusal("2606:2800:220:1:248:1893:25c8:1946") is None


def test_one_private_answer_taints_the_name() -> None:
    verdict = EgressPolicy.check_addresses("rebind.example", ["93.184.216.34", "10.0.0.5"])
    assert (verdict.allowed, verdict.rule_id) == (False, "egress.private-address")
    assert "10.0.0.5" in verdict.reason
    assert EgressPolicy.check_addresses("ok.example", ["93.184.216.34"]).allowed
    assert EgressPolicy.check_addresses("none.example", []).rule_id == "egress.unresolved"


def test_address_check_is_injectable() -> None:
    relaxed = EgressPolicy.check_addresses(
        "svc.test", ["127.0.0.1"], lambda ip: None if ip == "127.0.0.1" else "no"
    )
    assert relaxed.allowed
    assert not EgressPolicy.check_addresses("svc.test", ["127.0.0.1"]).allowed


def test_connect_order_prefers_ipv4() -> None:
    assert connect_order(["2606::1", "93.184.216.34", "93.184.216.34"]) == [
        "93.184.216.34",
        "2606::1",
    ]


# -- the proxy's HTTP ------------------------------------------------------------------------
def test_connect_and_absolute_uri_destinations() -> None:
    connect = parse_head(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443")
    assert (destination(connect).host, destination(connect).port) == ("pypi.org", 443)
    assert destination(connect).path is None
    v6 = destination(parse_head(b"CONNECT [::1]:8443 HTTP/1.1"))
    assert (v6.host, v6.port) == ("::1", 8443)
    get = parse_head(b"GET http://example.com:8080/a/b?c=1 HTTP/1.1\r\nAccept: */*")
    dest = destination(get)
    assert (dest.host, dest.port, dest.path) == ("example.com", 8080, "/a/b?c=1")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"GET /relative HTTP/1.1", "absolute http:// URI"),
        (b"GET https://example.com/ HTTP/1.1", "CONNECT"),
        (b"GET ftp://example.com/ HTTP/1.1", "absolute http:// URI"),
        (b"CONNECT example.com HTTP/1.1", "host:port"),
        (b"CONNECT example.com:99999 HTTP/1.1", "bad port"),
        (b"GET http://169.254.169.254@evil.example/ HTTP/1.1", "user info"),
        (b"GET http://example.com:abc/ HTTP/1.1", "bad URL"),
    ],
)
def test_requests_a_proxy_cannot_serve_are_refused(raw: bytes, needle: str) -> None:
    with pytest.raises(EgressRequestError, match=needle):
        destination(parse_head(raw))


@pytest.mark.parametrize(
    "raw", [b"GARBAGE", b"GET http://x/ SPDY/3", b"GET http://x/ HTTP/1.1\r\nno colon here"]
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(EgressRequestError):
        parse_head(raw)


def test_forwarded_head_is_origin_form_with_connection_close() -> None:
    head = RequestHead(
        "GET",
        "http://example.com/x",
        "HTTP/1.1",
        [
            ("Host", "other.example"),
            ("Proxy-Authorization", "Basic abc"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Accept", "*/*"),
        ],
    )
    out = forwarded_head(head, destination(head)).decode()
    assert out.startswith("GET /x HTTP/1.1\r\nHost: example.com\r\n")
    assert "Accept: */*" in out and out.endswith("Connection: close\r\n\r\n")
    assert "Proxy-Authorization" not in out and "other.example" not in out
    assert "X-Secret" not in out and "keep-alive" not in out


# -- turning it on -----------------------------------------------------------------------------
def test_egress_allowed_hosts_setting_takes_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARTERDECK_EGRESS_ALLOWED_HOSTS", "pypi.org, *.pythonhosted.org,")
    assert load_settings(None).egress_allowed_hosts == ["pypi.org", "*.pythonhosted.org"]
    monkeypatch.delenv("QUARTERDECK_EGRESS_ALLOWED_HOSTS")
    assert load_settings(None).egress_allowed_hosts == []
    monkeypatch.setenv("QUARTERDECK_EGRESS_ALLOWED_HOSTS", "https://pypi.org/simple")
    with pytest.raises(ConfigError, match="QUARTERDECK_EGRESS_ALLOWED_HOSTS"):
        load_settings(None)


def test_agent_types_have_no_network_unless_they_say_egress() -> None:
    catalog = AgentCatalog.from_mapping({"coder": {"network": "egress"}})
    assert catalog.get("coder").network == "egress"
    assert catalog.get("reviewer").network == "none"
    assert AgentCatalog.defaults().get("coder").network == "none"
    with pytest.raises(ConfigError, match=r"agent_types\.coder\.network"):
        AgentCatalog.from_mapping({"coder": {"network": "full"}})
