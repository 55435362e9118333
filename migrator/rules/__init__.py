"""Migration rules; each module defines rule classes that register themselves."""

from migrator.rules.base import Rule, all_rules, get_rule

__all__ = ["Rule", "all_rules", "get_rule"]
