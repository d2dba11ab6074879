"""The agent's policy: who may own which sessions, and how much.

A YAML file (read with ruamel.yaml, so that errors name their line)::

    sessions:                 # first rule whose name matches decides
      - name: "vm-*"          # fnmatch pattern of session names
        uid: [0, 1000]        # any of these users ...
        gid: 107              # ... or groups (primary or supplementary) ...
        unit: "admin@*.service" # ... or systemd system units (fnmatch)
      - name: "vm-%i"         # %i: an instance, the same in name and unit:
        unit: "qemu@%i.service" # qemu@1.service may own vm-1, not vm-2
    limits:                   # per client uid
      sessions: 8
      files: 256
      bytes: 64G              # K, M, G, T suffixes (powers of 1024)
    finish_after: 300         # seconds after start in the new kernel
    claim_grace: 10           # seconds between the last claim and FINISH

Everything not allowed is denied. A bad file is refused at start with its
line and the reason.
"""

from __future__ import annotations

import fnmatch
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .peer import Peer

_SIZE = re.compile(r"^(\d+)\s*([KMGT]?)i?B?$", re.IGNORECASE)


class PolicyError(ValueError):
    """A policy file that cannot be used: says where and why."""


INSTANCE = "%i"


@dataclass(frozen=True)
class Rule:
    pattern: str
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    units: tuple[str, ...] = ()

    def instance(self, session: str) -> str | None:
        """The instance (%i) ``session`` gives, "" if the rule has none, None if its name does not match."""
        if INSTANCE not in self.pattern:
            return "" if fnmatch.fnmatchcase(session, self.pattern) else None
        # The shortest head that matches what comes before %i, then the longest
        # instance (no "/") whose tail matches what comes after it. Only
        # fnmatch's public matching: its regular expressions' form changes
        # between Python versions (3.14 anchors them with \z, not \Z).
        before, after = self.pattern.split(INSTANCE)
        for start in range(len(session)):
            if not fnmatch.fnmatchcase(session[:start], before):
                continue
            for end in range(len(session), start, -1):
                if "/" not in session[start:end] and fnmatch.fnmatchcase(session[end:], after):
                    return session[start:end]
        return None

    def allows(self, peer: Peer, instance: str = "") -> bool:
        units = [u.replace(INSTANCE, glob.escape(instance)) for u in self.units]
        return (peer.uid in self.uids or peer.gid in self.gids or bool(peer.groups & self.gids)
                or (peer.unit is not None and any(fnmatch.fnmatchcase(peer.unit, u) for u in units)))


@dataclass(frozen=True)
class Limits:
    sessions: int = 16
    files: int = 1024
    bytes: int = 1 << 40


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    limits: Limits = field(default_factory=Limits)
    finish_after: float = 300.0
    claim_grace: float = 10.0

    def may_own(self, peer: Peer, session: str) -> bool:
        for rule in self.rules:
            instance = rule.instance(session)
            if instance is not None:
                return rule.allows(peer, instance)
        return False


class _Reader:
    """Turns a parsed YAML tree into a Policy, naming the line of each error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: Any, key: Any, what: str, reason: str) -> PolicyError:
        line = None
        lc = getattr(node, "lc", None)
        if lc is not None:
            try:
                line = (lc.key(key) if isinstance(key, str) else lc.item(key))[0] + 1
            except (KeyError, IndexError, TypeError):
                line = lc.line + 1
        where = f"{self.source}:{line}" if line else self.source
        return PolicyError(f"{where}: {what}: {reason}")

    def mapping(self, node: Any, key: Any, what: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise self.fail(node, key, what, "expected a mapping")
        for k in node:
            if k not in allowed:
                raise self.fail(node, k, f"{what}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")
        return node

    def ints(self, node: dict[str, Any], key: str, what: str) -> frozenset[int]:
        value = node.get(key, [])
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise self.fail(node, key, what, "expected an id or a list of ids (whole numbers)")
        return frozenset(values)

    def strings(self, node: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
        value = node.get(key, [])
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in values):
            raise self.fail(node, key, what, "expected a name or a list of names")
        return tuple(values)

    def count(self, node: dict[str, Any], key: str, what: str, default: int, sizes: bool = False) -> int:
        value = node.get(key, default)
        if sizes and isinstance(value, str):
            m = _SIZE.match(value.strip())
            if m:
                value = int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            hint = "a whole number or a size like 64G" if sizes else "a whole number"
            raise self.fail(node, key, what, f"expected {hint}")
        return value

    def policy(self, root: Any) -> Policy:
        if root is None:
            root = {}
        top = self.mapping(root, 0, "policy", {"sessions", "limits", "finish_after", "claim_grace"})
        sessions = top.get("sessions", [])
        if not isinstance(sessions, list):
            raise self.fail(top, "sessions", "sessions", "expected a list of rules")
        rules = []
        for i, item in enumerate(sessions):
            what = f"sessions[{i}]"
            rule = self.mapping(item, i, what, {"name", "uid", "gid", "unit"})
            if not isinstance(rule.get("name"), str) or not rule["name"]:
                raise self.fail(sessions, i, f"{what}.name", "every rule needs a session name pattern")
            uids, gids = self.ints(rule, "uid", f"{what}.uid"), self.ints(rule, "gid", f"{what}.gid")
            units = self.strings(rule, "unit", f"{what}.unit")
            instances = rule["name"].count(INSTANCE)
            if instances > 1:
                raise self.fail(rule, "name", f"{what}.name", f"at most one {INSTANCE} in a name")
            if not instances and any(INSTANCE in u for u in units):
                raise self.fail(rule, "unit", f"{what}.unit", f"{INSTANCE} in a unit needs {INSTANCE} in the name")
            rules.append(Rule(rule["name"], uids, gids, units))
        limits_node = self.mapping(top.get("limits", {}), "limits", "limits", {"sessions", "files", "bytes"})
        d = Limits()
        limits = Limits(self.count(limits_node, "sessions", "limits.sessions", d.sessions),
                        self.count(limits_node, "files", "limits.files", d.files),
                        self.count(limits_node, "bytes", "limits.bytes", d.bytes, sizes=True))
        finish_after = self.count(top, "finish_after", "finish_after", 300)
        claim_grace = self.count(top, "claim_grace", "claim_grace", 10)
        return Policy(tuple(rules), limits, float(finish_after), float(claim_grace))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        root = YAML(typ="rt").load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PolicyError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    return _Reader(source).policy(root)


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as e:
        raise PolicyError(f"{path}: {e.strerror}") from None
    return parse_policy(text, str(path))
