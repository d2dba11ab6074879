"""The agent's policy file: parsing, errors with their line, and decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveupdate.peer import Peer
from liveupdate.policy import Limits, PolicyError, load_policy, parse_policy

GOOD = """\
sessions:
  - name: "vm-*"
    uid: [0, 1000]
    unit: "qemu@*.service"
  - name: "db"
    gid: 107
  - name: "*"
    uid: []
limits:
  sessions: 2
  files: 8
  bytes: 64M
finish_after: 30
"""


def test_good_policy() -> None:
    policy = parse_policy(GOOD)
    assert policy.limits == Limits(sessions=2, files=8, bytes=64 << 20)
    assert policy.finish_after == 30
    root, user, other = Peer(1, 0, 0), Peer(2, 1000, 1000), Peer(3, 2000, 2000)
    assert policy.may_own(root, "vm-1") and policy.may_own(user, "vm-1")
    assert not policy.may_own(other, "vm-1")
    assert policy.may_own(Peer(4, 2000, 2000, "qemu@vm7.service"), "vm-7")
    assert policy.may_own(Peer(5, 3000, 107), "db") and not policy.may_own(root, "db")
    # The first matching rule decides: "*" allows nobody.
    assert not policy.may_own(root, "anything")


def test_supplementary_groups_count() -> None:
    policy = parse_policy(GOOD)
    assert policy.may_own(Peer(6, 3000, 3000, None, frozenset({5, 107})), "db")
    assert not policy.may_own(Peer(6, 3000, 3000, None, frozenset({5})), "db")


INSTANCES = """\
sessions:
  - name: "vm-%i"
    unit: "qemu@%i.service"
  - name: "db-%i-*"
    unit: ["pg@%i.service", "admin.service"]
"""


def test_an_instance_ties_the_unit_to_the_session() -> None:
    policy = parse_policy(INSTANCES)
    qemu1 = Peer(1, 107, 107, "qemu@1.service")
    assert policy.may_own(qemu1, "vm-1")
    assert not policy.may_own(qemu1, "vm-2") and not policy.may_own(qemu1, "vm-")
    assert not policy.may_own(Peer(1, 107, 107, "qemu@2.service"), "vm-1")
    # The instance is matched literally: glob characters in it match only themselves.
    assert not policy.may_own(Peer(1, 107, 107, "qemu@x.service"), "vm-*")
    assert policy.may_own(Peer(1, 107, 107, "qemu@*.service"), "vm-*")
    assert policy.may_own(Peer(2, 5, 5, "pg@main.service"), "db-main-7")
    assert not policy.may_own(Peer(2, 5, 5, "pg@main.service"), "db-other-7")
    assert policy.may_own(Peer(2, 5, 5, "admin.service"), "db-other-7")
    assert not policy.may_own(Peer(2, 5, 5, None), "vm-1")


def test_empty_policy_denies_everything() -> None:
    policy = parse_policy("")
    assert not policy.may_own(Peer(1, 0, 0), "vm-1")
    assert policy.limits == Limits()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("sessions:\n  - name: x\n    uid: abc\n", "p.yaml:3: sessions[0].uid: expected an id"),
        ("sessions:\n  - name: x\n    uid: [1, -2]\n", "p.yaml:3: sessions[0].uid"),
        ("sessions:\n  - uid: 1\n", "p.yaml:2: sessions[0].name: every rule needs"),
        ("sessions:\n  - name: x\n    user: 1\n", "p.yaml:3: sessions[0].user: unknown key"),
        ("sessions: 5\n", "p.yaml:1: sessions: expected a list"),
        ("limits:\n  files: 1\n  bytes: lots\n", "p.yaml:3: limits.bytes: expected a whole number or a size"),
        ("finish_after: soon\n", "p.yaml:1: finish_after: expected a whole number"),
        ("colour: blue\n", "p.yaml:1: policy.colour: unknown key"),
        ("sessions: [\n", "p.yaml:2: not valid YAML"),
        ("- a\n- b\n", "p.yaml:1: policy: expected a mapping"),
        ("sessions:\n  - name: a-%i-%i\n", "p.yaml:2: sessions[0].name: at most one %i"),
        ("sessions:\n  - name: a\n    unit: q@%i.service\n", "p.yaml:3: sessions[0].unit: %i in a unit needs"),
    ],
)
def test_bad_policies_name_line_and_reason(text: str, error: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "p.yaml")
    assert str(exc.value).startswith(error), str(exc.value)


def test_shipped_example_policy_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "systemd/policy.yaml"
    policy = load_policy(example)
    assert policy.may_own(Peer(1, 0, 0), "vm-1")
    assert policy.may_own(Peer(2, 107, 107, "qemu@1.service"), "vm-1")
    assert not policy.may_own(Peer(2, 107, 107, "qemu@2.service"), "vm-1")
    assert policy.claim_grace == 10


def test_instances_do_not_depend_on_fnmatchs_regular_expressions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.14's fnmatch.translate() anchors with \\z where 3.11 has \\Z; the agent
    under Debian sid's Python crashed on the first %i rule it matched (before: the
    rule took translate()'s output apart and asserted its form). Here translate()
    gives another form that this Python can compile."""
    import fnmatch

    real = fnmatch.translate
    monkeypatch.setattr(fnmatch, "translate", lambda pattern: f"(?:{real(pattern)})")
    policy = parse_policy(INSTANCES)
    assert policy.may_own(Peer(1, 107, 107, "qemu@1.service"), "vm-1")
    assert policy.may_own(Peer(2, 5, 5, "pg@a-b.service"), "db-a-b-7")  # the longest instance
    assert not policy.may_own(Peer(1, 107, 107, "qemu@a/b.service"), "vm-a/b")
