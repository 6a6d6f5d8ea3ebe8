"""sdc.rules: primary rules on hand-computed examples."""

import numpy as np
import pytest

from sdc.policy import load_policy
from sdc.rules import (dominance_rule, missing_rule, negatives_rule, p_percent_rule, percentile_rule, primary,
                       threshold_rule, union_unsafe, zeros_rule)


def test_threshold_boundary():
    n = np.array([0, 1, 9, 10, 11])
    assert threshold_rule(n, 10).tolist() == [True, True, True, False, False]
    # zeros not disclosive: an empty cell is exempt, 1..9 still fail
    assert threshold_rule(n, 10, zeros_disclosive=False).tolist() == [False, True, True, False, False]
    assert zeros_rule(n).tolist() == [True, False, False, False, False]


def test_dominance_by_hand():
    # totals 100; two largest 60+30 = 90 -> exactly k=0.90 is unsafe (ACRO's >=); 60+29 = 89 safe
    total = np.array([100.0, 100.0, 0.0])
    top = np.array([[60.0, 30.0], [60.0, 29.0], [0.0, 0.0]])
    m, prot = dominance_rule(total, top, 2, 0.90)
    assert m.tolist() == [True, False, False]
    assert prot[0] == pytest.approx(90 / 0.9 - 100)  # 0 at the boundary
    # (1, 0.5): largest 60 of 100
    m1, prot1 = dominance_rule(total, top, 1, 0.5)
    assert m1.tolist() == [True, True, False]
    assert prot1[0] == pytest.approx(60 / 0.5 - 100)


def test_p_percent_by_hand():
    # T=100, x1=80, x2=11: rest 9 < 0.1*80 = 8? no -> safe; x2=13: rest 7 < 8 -> unsafe
    total = np.array([100.0, 100.0, 50.0, 0.0])
    top = np.array([[80.0, 11.0], [80.0, 13.0], [50.0, 0.0], [0.0, 0.0]])
    m, prot = p_percent_rule(total, top, 0.10)
    assert m.tolist() == [False, True, True, False]
    assert prot[1] == pytest.approx(0.1 * 80 - 7)  # τ-ARGUS: p*x1 - (T - x1 - x2)
    assert prot[2] == pytest.approx(5.0)  # a single unit: the rest is 0
    # exactly at the boundary: rest == p*x1 is safe (strict <)
    m2, _ = p_percent_rule(np.array([100.0]), np.array([[80.0, 12.0]]), 0.10)
    assert m2.tolist() == [False]


def test_percentile_rule():
    n = np.array([19, 20, 39, 40])
    assert percentile_rule(n, 0.5, 10).tolist() == [True, False, False, False]
    assert percentile_rule(n, 0.25, 10).tolist() == [True, True, True, False]


def test_flags():
    assert negatives_rule(np.array([0, 2])).tolist() == [False, True]
    assert missing_rule(np.array([1, 0])).tolist() == [True, False]


def _ev(n, total, top, neg=None, miss=None):
    n = np.asarray(n)
    return dict(n_units=n, total=np.asarray(total, float), top=np.asarray(top, float),
                n_negative=np.zeros(len(n), int) if neg is None else np.asarray(neg),
                n_missing=np.zeros(len(n), int) if miss is None else np.asarray(miss))


def test_primary_combination_and_protection():
    pol = load_policy("acro")
    ev = _ev([10, 9, 20, 20, 0], [1000, 900, 1000, 1000, 0],
             [[100, 90], [100, 90], [950, 10], [50, 45], [0, 0]])
    r = primary(pol, "sum", **ev)
    assert r.primary.tolist() == [False, True, True, False, True]
    assert r.rules_lists() == [[], ["threshold"], ["dominance", "p_percent"], [], ["threshold", "zeros"]]
    # threshold cell: 10% of its value; dominance+p% cell: the larger rule protection
    assert r.upper[1] == pytest.approx(90.0)
    dom = (950 + 10) / 0.9 - 1000
    pp = 0.1 * 950 - (1000 - 950 - 10)
    assert r.upper[2] == pytest.approx(max(dom, pp))
    assert r.upper[4] == pytest.approx(1.0) and r.lower[4] == 0.0  # min_protection; lower capped at value
    assert r.upper[0] == 0 and r.upper[3] == 0


def test_count_tables_use_threshold_and_zeros_only():
    pol = load_policy("acro")
    ev = _ev([10, 3], [10, 3], [[1, 1], [1, 1]])
    r = primary(pol, "count", **{**ev, "top": None})
    assert r.primary.tolist() == [False, True]
    assert set(r.masks) == {"threshold", "zeros"}


def test_negatives_never_pass_silently():
    ev = _ev([20, 20], [100, 100], [[95, 5], [95, 5]], neg=[1, 0])
    review = primary(load_policy("acro"), "sum", **ev)
    # the negative cell is not judged by dominance (undefined) but must be reviewed
    assert review.primary.tolist() == [False, True]
    assert review.review.tolist() == [True, False]
    assert review.review_lists()[0] == ["negatives"]
    unsafe = primary(load_policy("essnet"), "sum", **ev)
    assert unsafe.primary.tolist() == [True, True]
    assert unsafe.rules_lists()[0] == ["negatives"]


def test_missing_actions():
    ev = _ev([20], [100], [[10, 10]], miss=[2])
    assert not primary(load_policy("acro"), "mean", **ev).review.any()  # ACRO: ignore
    r = primary(load_policy("essnet"), "mean", **ev)
    assert r.review.tolist() == [True] and r.review_lists() == [["missing"]]


def test_union_unsafe():
    pol = load_policy("acro")
    n = np.array([4, 5, 6, 30])
    total = np.array([40.0, 50.0, 60.0, 300.0])
    top = np.array([[10.0, 10.0], [10.0, 10.0], [10.0, 10.0], [280.0, 5.0]])
    neg = np.zeros(4, int)
    kw = dict(n_units=n, total=total, top=top, n_negative=neg)
    assert union_unsafe(pol, "count", np.array([0, 1]), **kw)  # 9 units < 10
    assert not union_unsafe(pol, "count", np.array([0, 2]), **kw)  # 10 units
    # 0 + 3: 34 units, but the largest unit (280) dominates 340: (280+10)/340 = 0.85 < 0.9;
    # p%: rest = 340 - 280 - 10 = 50 >= 28 -> safe
    assert not union_unsafe(pol, "sum", np.array([0, 3]), **kw)
    # 1 + 3 with a (1, 0.8) rule: 280/350 = 0.8 -> unsafe
    pol2 = load_policy({"name": "x", "threshold": {"min_units": 3}, "dominance": [{"n": 1, "k": 0.8}]})
    assert union_unsafe(pol2, "sum", np.array([1, 3]), **kw)
