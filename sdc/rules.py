"""Primary disclosure rules: pure functions from per-cell evidence to a mask and a reason.

Every function here takes numpy arrays (one entry per cell) and policy numbers, and returns
boolean masks (and, for the magnitude rules, the protection an unsafe cell needs).  Nothing here
reads data or knows about DuckDB; :func:`primary` combines the rules a policy switches on for a
statistic.

Rules and their exact inequality (``x1 >= x2 >= ...`` are the cell's largest unit values, ``T``
its total, ``n`` its number of units):

``threshold``   unsafe iff ``n < min_units`` (exactly ``min_units`` passes).  An empty cell is
                exempt when the policy says zeros are not disclosive.
``zeros``       unsafe iff ``n == 0`` and zeros are disclosive.
``dominance``   unsafe iff ``x1 + ... + xn >= k * T`` (and ``T > 0``) -- ACRO's ``>=``.
``p_percent``   unsafe iff ``T - x1 - x2 < p * x1``; a cell whose largest value is 0 is safe.
``negatives``   a cell with a negative unit value: dominance and p% are undefined there, so the
                policy makes it ``unsafe`` or ``review`` (never a silent pass).
``missing``     a cell with a unit whose value is missing: ``ignore``, ``review`` or ``unsafe``.
``percentile``  a median/percentile ``q`` is unsafe iff ``n * min(q, 1 - q) < m`` (fewer than ``m``
                units on either side of it).

Protection required of an unsafe cell (used by secondary suppression and the audit), as in
τ-ARGUS, symmetric below and above the value:

* p%:            ``p * x1 - (T - x1 - x2)``   (what the second-largest unit must not be able to
                 narrow the largest down to);
* (n, k):        ``(x1 + ... + xn) / k - T``;
* other rules:   ``threshold_protection * |value|``;
and in every case at least ``min_protection``.  The lower protection is capped at the value when
the table has no negative contributions (a non-negative cell cannot be shown to be below 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sdc.policy import Policy, percentile_q, stat_kind

__all__ = [
    "threshold_rule",
    "zeros_rule",
    "dominance_rule",
    "p_percent_rule",
    "negatives_rule",
    "missing_rule",
    "percentile_rule",
    "PrimaryResult",
    "primary",
    "union_unsafe",
    "RULE_ORDER",
]

RULE_ORDER = ("threshold", "zeros", "dominance", "p_percent", "percentile", "negatives", "missing")


# ---------------------------------------------------------------------- single rules
def threshold_rule(n_units: np.ndarray, min_units: int, zeros_disclosive: bool = True) -> np.ndarray:
    """Unsafe iff fewer than ``min_units`` units; empty cells exempt unless zeros are disclosive."""
    n = np.asarray(n_units)
    mask = n < min_units
    if not zeros_disclosive:
        mask &= n > 0
    return mask


def zeros_rule(n_units: np.ndarray) -> np.ndarray:
    """Unsafe iff the cell has no units (use only when the policy says zeros are disclosive)."""
    return np.asarray(n_units) == 0


def dominance_rule(total: np.ndarray, top: np.ndarray, n: int, k: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, protection)``: the ``n`` largest units hold ``k`` or more of a positive total."""
    total = np.asarray(total, dtype=float)
    top_n = np.asarray(top, dtype=float)[:, :n].sum(axis=1)
    mask = (total > 0) & (top_n >= k * total)
    protection = np.where(mask, top_n / k - total, 0.0)
    return mask, protection


def p_percent_rule(total: np.ndarray, top: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, protection)``: ``T - x1 - x2 < p * x1``; ``x1 == 0`` is safe."""
    total = np.asarray(total, dtype=float)
    top = np.asarray(top, dtype=float)
    x1 = top[:, 0]
    x2 = top[:, 1] if top.shape[1] > 1 else np.zeros_like(x1)
    rest = total - x1 - x2
    mask = (x1 > 0) & (rest < p * x1)
    protection = np.where(mask, p * x1 - rest, 0.0)
    return mask, protection


def negatives_rule(n_negative: np.ndarray) -> np.ndarray:
    """Cells with at least one negative unit value."""
    return np.asarray(n_negative) > 0


def missing_rule(n_missing: np.ndarray) -> np.ndarray:
    """Cells with at least one unit whose value is missing."""
    return np.asarray(n_missing) > 0


def percentile_rule(n_units: np.ndarray, q: float, min_each_side: int) -> np.ndarray:
    """Unsafe iff fewer than ``min_each_side`` units lie on either side of quantile ``q``."""
    n = np.asarray(n_units, dtype=float)
    return (n > 0) & (np.floor(n * min(q, 1 - q) + 1e-9) < min_each_side)


# ---------------------------------------------------------------------- combination
@dataclass
class PrimaryResult:
    """Which cells are unsafe, why, and how much protection each needs."""

    primary: np.ndarray  # bool per cell
    review: np.ndarray  # bool per cell: needs a checker's eye, not suppressed
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # rule -> unsafe mask
    review_masks: dict[str, np.ndarray] = field(default_factory=dict)  # rule -> review mask
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    def rules_of(self, i: int) -> list[str]:
        return [r for r in RULE_ORDER if r in self.masks and self.masks[r][i]]

    def review_of(self, i: int) -> list[str]:
        return [r for r in RULE_ORDER if r in self.review_masks and self.review_masks[r][i]]

    def rules_lists(self) -> list[list[str]]:
        """Per cell, the failed rules in :data:`RULE_ORDER` (vectorised over rules, not cells)."""
        return _lists(self.masks, len(self.primary))

    def review_lists(self) -> list[list[str]]:
        return _lists(self.review_masks, len(self.primary))


def _lists(masks: dict[str, np.ndarray], n: int) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(n)]
    for r in RULE_ORDER:
        m = masks.get(r)
        if m is None:
            continue
        for i in np.flatnonzero(m):
            out[i].append(r)
    return out


def primary(
    policy: Policy,
    stat: str,
    *,
    n_units: np.ndarray,
    total: np.ndarray,
    top: np.ndarray | None,
    n_negative: np.ndarray,
    n_missing: np.ndarray,
    value: np.ndarray | None = None,
) -> PrimaryResult:
    """Apply the policy's rules for ``stat`` to every cell.

    Which rules run: ``count`` -- threshold, zeros; ``sum``/``mean`` -- threshold, zeros,
    dominance, p%, negatives, missing; ``median``/``pNN`` -- threshold, zeros, percentile,
    missing; ``min``/``max`` -- threshold, zeros, missing.  ``value`` is the value protected by
    secondary suppression (default: ``total``).
    """
    n = np.asarray(n_units)
    total = np.asarray(total, dtype=float)
    kind = stat_kind(stat)
    magnitude = kind in ("sum", "mean")
    masks: dict[str, np.ndarray] = {}
    review: dict[str, np.ndarray] = {}
    prot = np.zeros(len(n))
    if policy.min_units is not None:
        masks["threshold"] = threshold_rule(n, policy.min_units, policy.zeros_disclosive)
    if policy.zeros_disclosive:
        masks["zeros"] = zeros_rule(n)
    neg = negatives_rule(n_negative) if kind != "count" else np.zeros(len(n), bool)
    if magnitude and top is not None:
        dom_mask = np.zeros(len(n), bool)
        for rule in policy.dominance:
            m, pr = dominance_rule(total, top, rule.n, rule.k)
            m &= ~neg
            dom_mask |= m
            prot = np.maximum(prot, np.where(m, pr, 0.0))
        if policy.dominance:
            masks["dominance"] = dom_mask
        if policy.p is not None:
            m, pr = p_percent_rule(total, top, policy.p)
            m &= ~neg
            masks["p_percent"] = m
            prot = np.maximum(prot, np.where(m, pr, 0.0))
    q = percentile_q(stat) if kind in ("median", "percentile") else None
    if q is not None and policy.percentile_min_units_each_side:
        masks["percentile"] = percentile_rule(n, q, policy.percentile_min_units_each_side)
    if magnitude and neg.any():
        (masks if policy.negatives == "unsafe" else review)["negatives"] = neg
    if kind != "count" and policy.missing != "ignore":
        miss = missing_rule(n_missing)
        if miss.any():
            (masks if policy.missing == "unsafe" else review)["missing"] = miss
    prim = np.zeros(len(n), bool)
    for m in masks.values():
        prim |= m
    rev = np.zeros(len(n), bool)
    for m in review.values():
        rev |= m
    rev &= ~prim
    x = np.abs(total if value is None else np.asarray(value, dtype=float))
    x = np.nan_to_num(x)
    base = policy.threshold_protection * x
    # dominance/p% cells need their rule's protection, cells failing any other rule the policy's
    # fraction of their value; both: the larger; always at least min_protection
    other = np.zeros(len(n), bool)
    for r, m in masks.items():
        if r not in ("dominance", "p_percent"):
            other |= m
    upper = np.where(other, np.maximum(prot, base), prot)
    upper = np.where(prim, np.maximum(upper, policy.min_protection), 0.0)
    lower = upper.copy()
    if not (np.asarray(n_negative) > 0).any():
        lower = np.minimum(lower, x)
    return PrimaryResult(primary=prim, review=rev, masks=masks, review_masks=review, lower=lower, upper=upper)


def union_unsafe(
    policy: Policy,
    stat: str,
    idx: np.ndarray,
    *,
    n_units: np.ndarray,
    total: np.ndarray,
    top: np.ndarray | None,
    n_negative: np.ndarray,
) -> bool:
    """Would the union of cells ``idx`` (disjoint cells, e.g. two in one line) be unsafe?

    The union is treated as one cell: units and totals add, the largest contributions are the
    largest of the cells' largest contributions.  Applies threshold, dominance and p%.  Used for
    the "two suppressed cells whose sum is unsafe" trap of secondary suppression.
    """
    idx = np.asarray(idx, dtype=np.int64)
    n = np.array([int(np.asarray(n_units)[idx].sum())])
    t = np.array([float(np.asarray(total, dtype=float)[idx].sum())])
    if policy.min_units is not None and threshold_rule(n, policy.min_units, policy.zeros_disclosive)[0]:
        return True
    if stat_kind(stat) not in ("sum", "mean") or top is None:
        return False
    if int(np.asarray(n_negative)[idx].sum()) > 0:
        return False  # undefined; the cells themselves carry the negatives flag
    k = top.shape[1]
    merged = np.sort(np.asarray(top, dtype=float)[idx].ravel())[::-1][:k].reshape(1, -1)
    for rule in policy.dominance:
        if dominance_rule(t, merged, rule.n, rule.k)[0][0]:
            return True
    if policy.p is not None and p_percent_rule(t, merged, policy.p)[0][0]:
        return True
    return False
