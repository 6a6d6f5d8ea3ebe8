"""sdc: statistical disclosure control for a secure research workspace.

``sdc.table(...)`` computes a table's per-cell evidence with DuckDB, applies a policy's primary
rules, protects the unsafe cells (secondary suppression, or rounding) and proves the protection
with an LP audit.  ``sdc.figure(...)`` and ``sdc.model(...)`` check and draw figures and refit
models on checked aggregates; ``sdc.summary(...)`` checks summary statistics per cell.
``sdc.load_policy(name_or_file)`` loads a rule set.
"""

from sdc.errors import PolicyError, SdcError, SourceError, TableSpecError
from sdc.policy import Policy, list_policies, load_policy
from sdc.table import Cell, CheckedTable, table, table_from_spec
from sdc.figures import CheckedFigure, FigureSpecError, figure, figure_from_spec
from sdc.models import CheckedModel, ModelSpecError, model, model_from_spec
from sdc.summary import CheckedSummary, summary

__all__ = [
    "table",
    "table_from_spec",
    "CheckedTable",
    "Cell",
    "figure",
    "figure_from_spec",
    "CheckedFigure",
    "model",
    "model_from_spec",
    "CheckedModel",
    "summary",
    "CheckedSummary",
    "load_policy",
    "list_policies",
    "Policy",
    "SdcError",
    "PolicyError",
    "SourceError",
    "TableSpecError",
    "FigureSpecError",
    "ModelSpecError",
]
