"""Routing rules: which received instances make their study eligible for reporting."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dicomnode.config import RoutingConfig, RoutingRule


@dataclass(frozen=True)
class InstanceFacts:
    """The header values routing looks at, as received."""

    modality: str
    body_part: str
    view_position: str
    sop_class_uid: str
    calling_ae_title: str


def _norm(value: str) -> str:
    return value.strip().upper()


def _matches(allowed: Iterable[str], value: str) -> bool:
    allowed = tuple(allowed)
    return not allowed or _norm(value) in {_norm(a) for a in allowed}


def rule_matches(rule: RoutingRule, facts: InstanceFacts) -> bool:
    return (
        _matches(rule.modalities, facts.modality)
        and _matches(rule.body_parts, facts.body_part)
        and _matches(rule.view_positions, facts.view_position)
        and (not rule.sop_class_uids or facts.sop_class_uid in rule.sop_class_uids)
        and _matches(rule.calling_ae_titles, facts.calling_ae_title)
    )


def match_rule(config: RoutingConfig, facts: InstanceFacts) -> str | None:
    """Name of the first rule the instance matches, or ``None``."""
    for rule in config.rules:
        if rule_matches(rule, facts):
            return rule.name
    return None
