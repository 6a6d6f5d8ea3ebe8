"""Disclosure-control policies: named rule sets with parameters, stored as TOML data.

A policy is a plain TOML file.  The shipped ones live in ``sdc/policies/`` and are selected by
name (``load_policy("acro")``); a project may give its own file (``load_policy("rules.toml")``).
Every key is optional: an absent rule is off.  Unknown keys are an error (a typo must not
silently switch a rule off).

Schema (see ``docs/sdc-policies.md`` for the full description)::

    name = "acro"                    # required
    title = "..."                    # one line for `sdc policies`
    source = "..."                   # where the numbers come from

    [threshold]
    min_units = 10                   # a cell with fewer units is unsafe (10 passes)

    [[dominance]]                    # may repeat
    n = 2
    k = 0.90                         # unsafe when the n largest units hold k or more of the total

    [p_percent]
    p = 0.10                         # unsafe when total - x1 - x2 < p * x1

    [zeros]
    disclosive = true                # an empty cell (no units) is unsafe

    [negatives]
    action = "review"                # "unsafe" | "review": a cell with a negative contribution
                                     # (dominance and p% are undefined there); never passes silently

    [missing]
    action = "ignore"                # "ignore" | "review" | "unsafe": a cell with a unit whose
                                     # value is missing (NULL or NaN)

    [statistics]
    allowed = ["count", "sum", "mean"]   # also "median", "percentile" (p1..p99), "min", "max"
    percentile_min_units_each_side = 10  # a median/percentile q needs n*min(q, 1-q) >= this

    [rounding]                       # OpenSAFELY style: round published counts, margins are
    base = 5                         # sums of the rounded inner cells
    stats = ["count"]

    [secondary]
    method = "auto"                  # passed to sdc.suppress.secondary_suppression; "none" = off
    threshold_protection = 0.10      # required protection of a threshold/zero/negative cell,
    min_protection = 1.0             # as a fraction of its value, and at least this much

    # figures, models and summary statistics (sdc.figure / sdc.model / sdc.summary)
    [statistics]
    extremes = "refuse"              # min/max in sdc.summary: "refuse" | "mean_of_k"
    extremes_k = 5                   # ... the mean of the k most extreme units

    [models]
    min_residual_df = 10             # residual degrees of freedom of a model
    min_units_per_level = 10         # units behind every categorical level / interaction cell
                                     # (default: threshold.min_units)
    significant_digits = 4           # released numbers rounded to this many significant digits

    [figures]
    survival_min_left = 10           # Kaplan-Meier: pool steps until this many units left the
                                     # risk set (default: threshold.min_units)
    whiskers = [5, 95]               # box plot whisker percentiles
    box_min_units_each_side = 10     # a box-plot percentile q needs n*min(q,1-q) >= this
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "Policy",
    "Dominance",
    "PolicyError",
    "load_policy",
    "list_policies",
    "policy_dir",
    "STATS",
    "stat_kind",
    "percentile_q",
]

#: statistics a table can have; ``pNN`` (p1 .. p99) is a percentile
STATS = ("count", "sum", "mean", "median", "percentile", "min", "max")

_ACTIONS_NEG = ("unsafe", "review")
_ACTIONS_MISSING = ("ignore", "review", "unsafe")
_EXTREMES = ("refuse", "mean_of_k")


from sdc.errors import PolicyError


@dataclass(frozen=True)
class Dominance:
    n: int
    k: float


@dataclass(frozen=True)
class Policy:
    """A validated rule set.  Build with :func:`load_policy` or :meth:`Policy.from_dict`."""

    name: str
    title: str = ""
    source: str = ""
    min_units: int | None = None
    dominance: tuple[Dominance, ...] = ()
    p: float | None = None
    zeros_disclosive: bool = False
    negatives: str = "review"
    missing: str = "ignore"
    allowed_stats: tuple[str, ...] = ("count", "sum", "mean")
    percentile_min_units_each_side: int = 0
    rounding_base: int | None = None
    rounding_stats: tuple[str, ...] = ("count",)
    secondary_method: str = "auto"
    threshold_protection: float = 0.10
    min_protection: float = 1.0
    extremes: str = "refuse"
    extremes_k: int = 5
    min_residual_df: int | None = None
    model_min_units_per_level: int | None = None
    significant_digits: int | None = None
    survival_min_left: int | None = None
    whiskers: tuple[int, int] = (5, 95)
    box_min_units_each_side: int = 0
    path: str | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "policy") -> "Policy":
        """Validate a parsed TOML document; raise :class:`PolicyError` naming the bad key."""
        d = dict(data)
        top = {"name", "title", "source", "description", "threshold", "dominance", "p_percent",
               "zeros", "negatives", "missing", "statistics", "rounding", "secondary", "models",
               "figures"}
        _no_unknown(d, top, where)
        name = d.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{where}: 'name' must be a non-empty string")
        kw: dict[str, Any] = {"name": name}
        for key in ("title", "source"):
            if key in d:
                kw[key] = _typed(d[key], str, f"{where}: '{key}'")
        if "description" in d:
            _typed(d["description"], str, f"{where}: 'description'")

        if "threshold" in d:
            t = _table(d["threshold"], f"{where}: [threshold]")
            _no_unknown(t, {"min_units"}, f"{where}: [threshold]")
            if "min_units" in t:
                kw["min_units"] = _int(t["min_units"], f"{where}: threshold.min_units", lo=1)

        if "dominance" in d:
            dom = d["dominance"]
            if isinstance(dom, dict):
                dom = [dom]
            if not isinstance(dom, list):
                raise PolicyError(f"{where}: 'dominance' must be a table or an array of tables ([[dominance]])")
            rules = []
            for i, r in enumerate(dom):
                w = f"{where}: dominance[{i}]"
                r = _table(r, w)
                _no_unknown(r, {"n", "k"}, w)
                if "n" not in r or "k" not in r:
                    raise PolicyError(f"{w}: needs both 'n' and 'k'")
                n = _int(r["n"], f"{w}.n", lo=1)
                k = _float(r["k"], f"{w}.k")
                if not 0 < k <= 1:
                    raise PolicyError(f"{w}.k must be a fraction in (0, 1], got {k} (write 0.90, not 90)")
                rules.append(Dominance(n, k))
            kw["dominance"] = tuple(rules)

        if "p_percent" in d:
            t = _table(d["p_percent"], f"{where}: [p_percent]")
            _no_unknown(t, {"p"}, f"{where}: [p_percent]")
            if "p" in t:
                p = _float(t["p"], f"{where}: p_percent.p")
                if not 0 < p < 1:
                    raise PolicyError(f"{where}: p_percent.p must be a fraction in (0, 1), got {p} (write 0.10, not 10)")
                kw["p"] = p

        if "zeros" in d:
            t = _table(d["zeros"], f"{where}: [zeros]")
            _no_unknown(t, {"disclosive"}, f"{where}: [zeros]")
            if "disclosive" in t:
                kw["zeros_disclosive"] = _typed(t["disclosive"], bool, f"{where}: zeros.disclosive")

        if "negatives" in d:
            t = _table(d["negatives"], f"{where}: [negatives]")
            _no_unknown(t, {"action"}, f"{where}: [negatives]")
            if "action" in t:
                kw["negatives"] = _choice(t["action"], _ACTIONS_NEG, f"{where}: negatives.action")

        if "missing" in d:
            t = _table(d["missing"], f"{where}: [missing]")
            _no_unknown(t, {"action"}, f"{where}: [missing]")
            if "action" in t:
                kw["missing"] = _choice(t["action"], _ACTIONS_MISSING, f"{where}: missing.action")

        if "statistics" in d:
            w = f"{where}: [statistics]"
            t = _table(d["statistics"], w)
            _no_unknown(t, {"allowed", "percentile_min_units_each_side", "extremes", "extremes_k"}, w)
            if "extremes" in t:
                kw["extremes"] = _choice(t["extremes"], _EXTREMES, f"{w}.extremes")
            if "extremes_k" in t:
                kw["extremes_k"] = _int(t["extremes_k"], f"{w}.extremes_k", lo=1)
            if "allowed" in t:
                allowed = t["allowed"]
                if not isinstance(allowed, list) or not all(isinstance(s, str) for s in allowed):
                    raise PolicyError(f"{w}.allowed must be a list of strings")
                bad = [s for s in allowed if s not in STATS]
                if bad:
                    raise PolicyError(f"{w}.allowed: unknown statistic {bad[0]!r}; known: {', '.join(STATS)}")
                kw["allowed_stats"] = tuple(allowed)
            if "percentile_min_units_each_side" in t:
                kw["percentile_min_units_each_side"] = _int(
                    t["percentile_min_units_each_side"], f"{w}.percentile_min_units_each_side", lo=0
                )

        if "rounding" in d:
            w = f"{where}: [rounding]"
            t = _table(d["rounding"], w)
            _no_unknown(t, {"base", "stats"}, w)
            if "base" not in t:
                raise PolicyError(f"{w} needs 'base'")
            kw["rounding_base"] = _int(t["base"], f"{w}.base", lo=1)
            if "stats" in t:
                st = t["stats"]
                if not isinstance(st, list) or not all(s in ("count", "sum") for s in st):
                    raise PolicyError(f"{w}.stats must be a list drawn from 'count', 'sum'")
                kw["rounding_stats"] = tuple(st)

        if "secondary" in d:
            w = f"{where}: [secondary]"
            t = _table(d["secondary"], w)
            _no_unknown(t, {"method", "threshold_protection", "min_protection"}, w)
            if "method" in t:
                kw["secondary_method"] = _typed(t["method"], str, f"{w}.method")
            if "threshold_protection" in t:
                tp = _float(t["threshold_protection"], f"{w}.threshold_protection")
                if not 0 <= tp <= 1:
                    raise PolicyError(f"{w}.threshold_protection must be a fraction in [0, 1], got {tp}")
                kw["threshold_protection"] = tp
            if "min_protection" in t:
                mp = _float(t["min_protection"], f"{w}.min_protection")
                if mp < 0:
                    raise PolicyError(f"{w}.min_protection must be >= 0, got {mp}")
                kw["min_protection"] = mp

        if "models" in d:
            w = f"{where}: [models]"
            t = _table(d["models"], w)
            _no_unknown(t, {"min_residual_df", "min_units_per_level", "significant_digits"}, w)
            if "min_residual_df" in t:
                kw["min_residual_df"] = _int(t["min_residual_df"], f"{w}.min_residual_df", lo=1)
            if "min_units_per_level" in t:
                kw["model_min_units_per_level"] = _int(t["min_units_per_level"], f"{w}.min_units_per_level", lo=1)
            if "significant_digits" in t:
                kw["significant_digits"] = _int(t["significant_digits"], f"{w}.significant_digits", lo=1)

        if "figures" in d:
            w = f"{where}: [figures]"
            t = _table(d["figures"], w)
            _no_unknown(t, {"survival_min_left", "whiskers", "box_min_units_each_side"}, w)
            if "survival_min_left" in t:
                kw["survival_min_left"] = _int(t["survival_min_left"], f"{w}.survival_min_left", lo=1)
            if "whiskers" in t:
                wh = t["whiskers"]
                if (not isinstance(wh, list) or len(wh) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in wh)
                        or not 1 <= wh[0] < 25 or not 75 < wh[1] <= 99):
                    raise PolicyError(f"{w}.whiskers must be two percentiles [lo, hi] with 1 <= lo < 25 and 75 < hi <= 99, got {wh!r}")
                kw["whiskers"] = (wh[0], wh[1])
            if "box_min_units_each_side" in t:
                kw["box_min_units_each_side"] = _int(t["box_min_units_each_side"], f"{w}.box_min_units_each_side", lo=0)
        return cls(**kw)

    # ------------------------------------------------------------------ queries
    @property
    def rounds(self) -> bool:
        return self.rounding_base is not None

    def allows(self, stat: str) -> bool:
        """True if the statistic (``count``, ``mean``, ``median``, ``p90``, ...) is allowed."""
        kind = stat_kind(stat)
        return kind in self.allowed_stats or (kind == "median" and "percentile" in self.allowed_stats)

    @property
    def units_per_level(self) -> int:
        """Units a model's categorical level / interaction cell needs (default: the threshold)."""
        if self.model_min_units_per_level is not None:
            return self.model_min_units_per_level
        return self.min_units or 1

    @property
    def survival_pool(self) -> int:
        """Units that must leave a Kaplan-Meier risk set between released steps."""
        if self.survival_min_left is not None:
            return self.survival_min_left
        return self.min_units or 1

    @property
    def top_k(self) -> int:
        """How many largest unit contributions the rules need per cell (at least 2)."""
        return max([2, *(r.n for r in self.dominance)])

    def to_json(self) -> dict:
        """The parameters, as they go into a checked table's JSON (stable key order)."""
        out: dict[str, Any] = {"name": self.name}
        if self.title:
            out["title"] = self.title
        out["threshold"] = {"min_units": self.min_units} if self.min_units is not None else None
        out["dominance"] = [{"n": r.n, "k": r.k} for r in self.dominance]
        out["p_percent"] = {"p": self.p} if self.p is not None else None
        out["zeros"] = {"disclosive": self.zeros_disclosive}
        out["negatives"] = {"action": self.negatives}
        out["missing"] = {"action": self.missing}
        out["statistics"] = {
            "allowed": list(self.allowed_stats),
            "percentile_min_units_each_side": self.percentile_min_units_each_side,
            "extremes": self.extremes,
            "extremes_k": self.extremes_k,
        }
        out["rounding"] = (
            {"base": self.rounding_base, "stats": list(self.rounding_stats)} if self.rounds else None
        )
        out["secondary"] = {
            "method": self.secondary_method,
            "threshold_protection": self.threshold_protection,
            "min_protection": self.min_protection,
        }
        models = {"min_residual_df": self.min_residual_df, "min_units_per_level": self.units_per_level,
                  "significant_digits": self.significant_digits}
        out["models"] = {k: v for k, v in models.items() if v is not None}
        out["figures"] = {
            "survival_min_left": self.survival_pool,
            "whiskers": list(self.whiskers),
            "box_min_units_each_side": self.box_min_units_each_side,
        }
        return out

    def summary(self) -> str:
        """One line with the numbers, for ``sdc policies``."""
        parts = []
        if self.min_units is not None:
            parts.append(f"min units {self.min_units}")
        parts += [f"dominance ({r.n}, {r.k:g})" for r in self.dominance]
        if self.p is not None:
            parts.append(f"p% {self.p:g}")
        parts.append("zeros disclosive" if self.zeros_disclosive else "zeros allowed")
        parts.append(f"negatives {self.negatives}")
        if self.missing != "ignore":
            parts.append(f"missing {self.missing}")
        if self.rounds:
            parts.append(f"rounding to {self.rounding_base} ({'/'.join(self.rounding_stats)})")
        parts.append("stats " + "/".join(self.allowed_stats))
        if self.percentile_min_units_each_side and any(s in self.allowed_stats for s in ("median", "percentile")):
            parts.append(f"percentiles need {self.percentile_min_units_each_side} units each side")
        parts.append(f"secondary {self.secondary_method}")
        return ", ".join(parts)


def stat_kind(stat: str) -> str:
    """``"p90"`` -> ``"percentile"``, other names unchanged."""
    if isinstance(stat, str) and len(stat) > 1 and stat[0] == "p" and stat[1:].isdigit():
        return "percentile"
    return stat


def percentile_q(stat: str) -> float | None:
    """The quantile of a ``median``/``pNN`` statistic, else None; ValueError for p0/p100+."""
    if stat == "median":
        return 0.5
    if stat_kind(stat) == "percentile":
        q = int(stat[1:])
        if not 1 <= q <= 99:
            raise ValueError(f"percentile {stat!r} must be between p1 and p99")
        return q / 100
    return None


# ---------------------------------------------------------------------- loading
def policy_dir() -> Path:
    return Path(__file__).with_name("policies")


def list_policies() -> list[Policy]:
    """The shipped policies, sorted by name."""
    return [load_policy(p) for p in sorted(policy_dir().glob("*.toml"))]


def load_policy(policy: "str | Path | Mapping | Policy") -> Policy:
    """A policy by shipped name, by TOML file path, from a dict, or passed through.

    Raises :class:`PolicyError` with one clear line for an unknown name, a missing or unreadable
    file, invalid TOML or a schema violation.
    """
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, Mapping):
        return Policy.from_dict(policy)
    if not isinstance(policy, (str, Path)):
        raise PolicyError(f"policy must be a name, a TOML path, a dict or a Policy, not {type(policy).__name__}")
    s = str(policy)
    path = Path(s)
    looks_like_path = isinstance(policy, Path) or s.endswith(".toml") or "/" in s or "\\" in s
    if not looks_like_path:
        shipped = policy_dir() / f"{s}.toml"
        if not shipped.is_file():
            names = ", ".join(p.stem for p in sorted(policy_dir().glob("*.toml")))
            raise PolicyError(f"unknown policy {s!r}; shipped policies: {names} (or give a .toml file)")
        path = shipped
    if not path.is_file():
        raise PolicyError(f"policy file not found: {s}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"policy file {s} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"cannot read policy file {s}: {e}") from None
    pol = Policy.from_dict(data, where=f"policy file {path.name}")
    object.__setattr__(pol, "path", str(path))
    return pol


# ---------------------------------------------------------------------- validation helpers
def _no_unknown(d: Mapping, known: set, where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")


def _table(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise PolicyError(f"{where} must be a table")
    return v


def _typed(v: Any, typ: type, where: str) -> Any:
    if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
        raise PolicyError(f"{where} must be a {typ.__name__}, got {v!r}")
    return v


def _int(v: Any, where: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError(f"{where} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise PolicyError(f"{where} must be >= {lo}, got {v}")
    return v


def _float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PolicyError(f"{where} must be a number, got {v!r}")
    return float(v)


def _choice(v: Any, choices: tuple, where: str) -> str:
    if v not in choices:
        raise PolicyError(f"{where} must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v
