"""The notification-policy tree walked as Grafana's Alertmanager walks it.

An alert enters at the root (which matches everything). At each matching node the children are
tried in order: the first that matches takes the alert, and the search goes on to its next
siblings only while the matched child says `continue`. A node none of whose children match
delivers itself. Settings (receiver, group_by, group_wait, group_interval, repeat_interval) are
inherited from the parent unless a node sets them. Matchers: `object_matchers` [[name, op, value]]
or `matchers` ["name=value"], ops = != =~ !~ (regexes anchored); a missing label is "".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Grafana's defaults for the root policy
DEFAULTS = {
    "group_by": ["alertname", "grafana_folder"],
    "group_wait": "30s",
    "group_interval": "5m",
    "repeat_interval": "4h",
}
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


@dataclass(frozen=True)
class Delivery:
    receiver: str
    group_by: tuple[str, ...]
    group_wait: str
    group_interval: str
    repeat_interval: str
    path: tuple[int, ...]  # child indices from the root

    def group_key(self, labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """Alerts with the same key are sent together ("..." groups by every label)."""
        names = sorted(labels) if "..." in self.group_by else list(self.group_by)
        return tuple((n, labels.get(n, "")) for n in names)


def matchers(node: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    out = [(str(n), str(op), str(v)) for n, op, v in node.get("object_matchers") or []]
    for text in node.get("matchers") or []:
        m = _MATCHER.match(text)
        if m is None:
            raise ValueError(f"cannot parse matcher {text!r}")
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def _match(op: str, have: str, want: str) -> bool:
    if op == "=":
        return have == want
    if op == "!=":
        return have != want
    if op == "=~":
        return re.fullmatch(want, have) is not None
    if op == "!~":
        return re.fullmatch(want, have) is None
    raise ValueError(f"unknown matcher operator {op!r}")


def node_matches(node: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(_match(op, labels.get(name, ""), value) for name, op, value in matchers(node))


def route(tree: Mapping[str, Any], labels: Mapping[str, str]) -> list[Delivery]:
    """Where an alert with `labels` is delivered, in order."""
    root = {**DEFAULTS, **tree}

    def settings(node: Mapping[str, Any], parent: Mapping[str, Any]) -> dict[str, Any]:
        keys = ("receiver", *DEFAULTS)
        return {k: node.get(k, parent.get(k)) for k in keys}

    def walk(node: Mapping[str, Any], inherited: Mapping[str, Any], path: tuple[int, ...]) -> list[Delivery]:
        mine = settings(node, inherited)
        out: list[Delivery] = []
        for i, child in enumerate(node.get("routes") or []):
            if not node_matches(child, labels):
                continue
            out += walk(child, mine, (*path, i))
            if not child.get("continue", False):
                break
        if not out:
            out = [
                Delivery(
                    receiver=str(mine["receiver"]),
                    group_by=tuple(mine["group_by"]),
                    group_wait=str(mine["group_wait"]),
                    group_interval=str(mine["group_interval"]),
                    repeat_interval=str(mine["repeat_interval"]),
                    path=path,
                )
            ]
        return out

    return walk(root, root, ())


def receivers_used(tree: Mapping[str, Any]) -> set[str]:
    out = {str(tree["receiver"])} if tree.get("receiver") else set()
    for child in tree.get("routes") or []:
        out |= receivers_used(child)
    return out
