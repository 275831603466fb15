"""Graph optimization: one pattern matcher, named passes, levels 0-3, readable reports."""

from ember.passes.matcher import Const, Match, Pattern, Rule, replace_output, rewrite, rule
from ember.passes.pipeline import OptimizationReport, get_pass, optimize, passes, register_pass

__all__ = ["Const", "Match", "OptimizationReport", "Pattern", "Rule", "get_pass", "optimize", "passes",
           "register_pass", "replace_output", "rewrite", "rule"]
