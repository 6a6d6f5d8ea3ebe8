"""The audit: independent LP attacker.  Hand-made bad patterns must be caught."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdc.audit import audit
from sdc.structure import Dimension, TableStructure

from sdc_helpers import mask as m


def table_3x3():
    t = TableStructure([Dimension.flat("r", ["a", "b", "c"]), Dimension.flat("c", ["x", "y", "z"])])
    v = t.aggregate(np.array([[1, 5, 7], [6, 8, 9], [4, 3, 10]])).astype(float)
    return t, v


def test_lone_cell_in_line_is_determined():
    t, v = table_3x3()
    prim = m(t, [("a", "x")])
    L = U = np.where(prim, 1.0, 0)
    a = audit(t, v, prim, prim, n_units=v + 5, lower=L, upper=U)
    assert not a.protected
    c = a.cells[0]
    assert (c.lo, c.hi) == (1, 1) and c.reason == "exactly determined"
    # two cells in the same row, nothing in their columns: both determined
    sup = m(t, [("a", "x"), ("a", "y")])
    a = audit(t, v, sup, prim, n_units=v + 5, lower=L, upper=U)
    assert not a.protected and a.interval(t.index(("a", "y"))) == (5, 5)


def test_rectangle_intervals_by_hand():
    """Suppress a,x (1) a,y (5) b,x (6) b,y (8): a,x + a,y = 6, a,x + b,x = 7, so a,x in [0, 6]
    (a,y >= 0 caps it at 6, b,y = 8 - 6 + ... >= 0 does not bind)."""
    t, v = table_3x3()
    prim = m(t, [("a", "x")])
    sup = m(t, [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])
    L = U = np.where(prim, 1.0, 0)
    for engine in ("highs", "linprog"):
        a = audit(t, v, sup, prim, n_units=v + 5, lower=L, upper=U, engine=engine)
        assert a.protected
        assert a.interval(t.index(("a", "x"))) == (0, 6)
        assert a.interval(t.index(("a", "y"))) == (0, 6)
        assert a.interval(t.index(("b", "x"))) == (1, 7)
        assert a.interval(t.index(("b", "y"))) == (7, 13)
    # asking for more than the rectangle gives fails, with the right side named
    a = audit(t, v, sup, prim, n_units=v + 5, lower=L, upper=np.where(prim, 6.0, 0))
    assert not a.protected and a.cells[0].reason == "upper bound too close"


def test_published_primary_and_json():
    t, v = table_3x3()
    prim = m(t, [("a", "x")])
    z = np.zeros(t.n_cells)
    a = audit(t, v, np.zeros(t.n_cells, bool), prim, n_units=v, lower=z, upper=z)
    assert not a.protected and a.cells[0].reason == "published"
    sup = m(t, [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])
    a = audit(t, v, sup, prim, n_units=v + 5, lower=z, upper=z)
    j = a.to_json()
    assert j["protected"] is True and j["n_suppressed"] == 4 and j["n_primary"] == 1
    assert j["cells"][0]["key"] == ["a", "x"] and j["cells"][0]["interval"] == [0.0, 6.0]
    assert "true_value" not in j["cells"][0]           # releasable form carries no values
    assert a.to_json(reveal=True)["cells"][0]["true_value"] == 1.0


def test_hierarchy_single_child_trap():
    """A region with one municipality: suppressing the municipality but not the region is
    useless, the region equals it."""
    d = Dimension.from_pairs("geo", {"m1": "R1", "m2": "R2", "m3": "R2"})
    s = Dimension.flat("sex", ["M", "F"])
    t = TableStructure([d, s])
    v = t.aggregate(np.array([[3, 9], [7, 8], [6, 5]])).astype(float)
    prim = m(t, [("m1", "M")])
    L = U = np.where(prim, 2.0, 0)
    sup = m(t, [("m1", "M"), ("m1", "F"), ("m2", "M"), ("m2", "F")])
    a = audit(t, v, sup, prim, n_units=v + 5, lower=L, upper=U)
    assert not a.protected     # (R1, M) = (m1, M) is published
    sup2 = sup | m(t, [("R1", "M"), ("R1", "F"), ("R2", "M"), ("R2", "F")])
    assert audit(t, v, sup2, prim, n_units=v + 5, lower=L, upper=U).protected


def test_integer_rounding_and_exact_mode_agree_with_protection_mode():
    rng = np.random.default_rng(3)
    d0 = Dimension.from_pairs("a", {f"l{i}": f"g{i % 3}" for i in range(7)})
    t = TableStructure([d0, Dimension.flat("b", list("pqrs")), Dimension.flat("c", list("xyz"))])
    v = t.aggregate(rng.poisson(4, t.model_matrix().shape[1])).astype(float)
    prim = (v > 0) & (v < 3)
    L = U = np.where(prim, 2.0, 0)
    for trial in range(3):
        sup = prim | (rng.random(t.n_cells) < 0.35)
        ex = audit(t, v, sup, prim, n_units=v, lower=L, upper=U, intervals="exact")
        pr = audit(t, v, sup, prim, n_units=v, lower=L, upper=U, intervals="protection")
        assert ex.intervals == "exact" and pr.intervals == "protection"
        assert [c.protected for c in ex.cells if c.primary] == [c.protected for c in pr.cells if c.primary]
        # inner bounds lie inside the exact intervals
        for ce, cp in zip(ex.cells, pr.cells):
            assert ce.lo <= cp.lo + 1e-9 and cp.hi <= ce.hi + 1e-9


def test_union_failure():
    """Row a: x (2) and y (1) suppressed with their column partners; x + y = 3 is implied by the
    row and is unsafe if < 5."""
    t, v = table_3x3()
    v = t.aggregate(np.array([[2, 1, 7], [6, 8, 9], [4, 3, 10]])).astype(float)
    prim = m(t, [("a", "x"), ("a", "y")])
    sup = prim | m(t, [("b", "x"), ("b", "y")])
    z = np.zeros(t.n_cells)
    unsafe = lambda idx: v[idx].sum() < 5  # noqa: E731
    a = audit(t, v, sup, prim, n_units=v + 5, lower=z, upper=z, union_is_unsafe=unsafe)
    assert not a.protected
    assert [sorted(f["cells"]) for f in a.union_failures] == [sorted([t.index(("a", "x")), t.index(("a", "y"))])]
    sup2 = sup | m(t, [("a", "z"), ("b", "z")])
    assert audit(t, v, sup2, prim, n_units=v + 5, lower=z, upper=z, union_is_unsafe=unsafe).protected


def test_negative_values_rejected():
    t, v = table_3x3()
    z = np.zeros(t.n_cells)
    with pytest.raises(ValueError, match="non-negative"):
        audit(t, -v, z > 0, z > 0, n_units=v, lower=z, upper=z)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), hier=st.booleans())
def test_property_lone_suppressed_cell_in_a_line_is_caught(seed, hier):
    """Any pattern in which a primary is the only suppressed cell of some line fails."""
    rng = np.random.default_rng(seed)
    nr, nc = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    if hier and nr >= 3:
        d0 = Dimension.from_pairs("r", {f"r{i}": f"g{i % 2}" for i in range(nr)})
    else:
        d0 = Dimension.flat("r", [f"r{i}" for i in range(nr)])
    t = TableStructure([d0, Dimension.flat("c", [f"c{j}" for j in range(nc)])])
    v = t.aggregate(rng.integers(1, 20, t.model_matrix().shape[1])).astype(float)
    inner = np.flatnonzero(t.inner_mask)
    p = int(rng.choice(inner))
    prim = np.zeros(t.n_cells, bool)
    prim[p] = True
    sup = prim | (rng.random(t.n_cells) < 0.5)
    # clear the rest of one line through p
    A = t.constraints().tocsr()
    rows = [r for r in range(A.shape[0]) if A[r, p] != 0]
    r = rows[int(rng.integers(len(rows)))]
    line = A.indices[A.indptr[r]:A.indptr[r + 1]]
    sup[line] = False
    sup[p] = True
    L = U = np.where(prim, 1.0, 0)
    a = audit(t, v, sup, prim, n_units=v + 5, lower=L, upper=U)
    assert not a.protected
    assert a.cells[[c.index for c in a.cells].index(p)].reason == "exactly determined"


# ---------------------------------------------------------------------------- certificates
def test_certificates_verified_not_trusted():
    """Claimed perturbations are checked: touching a published cell, breaking a relation, going
    below 0, wrong lengths or NaN are rejected; a valid rectangle is accepted."""
    from sdc.audit import verify_certificates

    t, v = table_3x3()
    sup = m(t, [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])
    ax, ay, bx, by = (t.index(k) for k in [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])
    good = (np.array([ax, ay, bx, by]), np.array([1.0, -1.0, -1.0, 1.0]))
    published = (np.array([ax, ay, bx, by, t.index(("c", "z"))]), np.array([1.0, -1, -1, 1, 0.5]))
    broken = (np.array([ax, ay, bx]), np.array([1.0, -1.0, -1.0]))
    negative = (np.array([ax, ay, bx, by]), np.array([-2.0, 2.0, 2.0, -2.0]))   # a,x = 1 - 2 < 0
    lengths = (np.array([ax, ay]), np.array([1.0]))
    nan = (np.array([ax, ay, bx, by]), np.array([np.nan, -1.0, -1.0, 1.0]))
    outside = (np.array([ax, t.n_cells]), np.array([1.0, -1.0]))
    Y, ok = verify_certificates(t.constraints(), v, sup,
                                [good, published, broken, negative, lengths, nan, outside])
    assert ok.tolist() == [True, False, False, False, False, False, False]
    assert Y.shape == (7, t.n_cells)


def test_forged_certificates_do_not_hide_a_bad_pattern():
    """A lone suppressed cell is exactly determined; a certificate that just moves it (not
    additive) or moves published cells along with it must not make the audit pass."""
    t, v = table_3x3()
    prim = m(t, [("a", "x")])
    ax, ay = t.index(("a", "x")), t.index(("a", "y"))
    L = U = np.where(prim, 1.0, 0)
    forged = [(np.array([ax]), np.array([1.0])), (np.array([ax]), np.array([-1.0])),
              (np.array([ax, ay]), np.array([1.0, -1.0]))]
    for mode in ("exact", "protection"):
        a = audit(t, v, prim, prim, n_units=v + 5, lower=L, upper=U, intervals=mode, certificates=forged)
        assert not a.protected
        assert a.certificates == 3 and a.certificates_rejected == 3
        assert a.cells[0].reason == "exactly determined"


def test_certificates_prove_without_lps_and_respect_singletons():
    t, v = table_3x3()
    prim = m(t, [("a", "x")])
    sup = m(t, [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])
    cells = np.array([t.index(k) for k in [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]])
    L = U = np.where(prim, 1.0, 0)
    certs = [(cells, np.array([1.0, -1, -1, 1])), (cells, np.array([-1.0, 1, 1, -1]))]
    a = audit(t, v, sup, prim, n_units=v + 5, lower=L, upper=U, intervals="protection", certificates=certs)
    assert a.protected and a.proved_by_certificate == 1 and a.n_local_lp == 0
    assert a.to_json()["proved_by_certificate"] == 1
    # inner bounds from the certificates: a,y moved to 4 and 6
    lo, hi = a.interval(t.index(("a", "y")))
    assert lo <= 4 and hi >= 6
    # b,y is a singleton: its unit knows b,y = 8, the certificates move it, so they prove nothing
    # against that attacker; the LP then finds the rectangle is undone (a,x determined)
    nu = v + 5
    nu[t.index(("b", "y"))] = 1
    a = audit(t, v, sup, prim, n_units=nu, lower=L, upper=U, intervals="protection", certificates=certs)
    assert a.proved_by_certificate == 0
    assert not a.protected and a.cells[0].attacker == t.index(("b", "y"))


def test_certificates_show_a_union_can_move():
    t, v = table_3x3()
    prim = m(t, [("a", "x"), ("a", "y")])
    sup = m(t, [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])
    cells = np.array([t.index(k) for k in [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]])
    L = U = np.where(prim, 1.0, 0)
    union = lambda idx: True  # noqa: E731  every union unsafe
    # the row a (a,x + a,y) is fixed by the published margin: a failure whatever the certificates
    certs = [(cells, np.array([1.0, -1, -1, 1])), (cells, np.array([-1.0, 1, 1, -1]))]
    a = audit(t, v, sup, prim, n_units=v + 5, lower=L, upper=U, intervals="protection",
              certificates=certs, union_is_unsafe=union)
    assert not a.protected and len(a.union_failures) >= 1
    # the column x pair (a,x, b,x) also has a known sum; nothing moves it either
    assert {tuple(sorted(f["cells"])) for f in a.union_failures} >= {
        tuple(sorted((t.index(("a", "x")), t.index(("a", "y")))))}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), three=st.booleans())
def test_property_certificates_never_change_the_verdict(seed, three):
    """With the suppression's certificates (protection mode) the verdict equals the exact audit's
    without them, also for deliberately weakened patterns (a random secondary cell dropped)."""
    from sdc.suppress import suppress

    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(3, 6)), int(rng.integers(2, 5))) + ((int(rng.integers(2, 4)),) if three else ())
    t = TableStructure([Dimension.flat(f"d{j}", [f"l{i}" for i in range(n)]) for j, n in enumerate(shape)])
    z = rng.poisson(rng.choice([0.7, 3, 12], t.model_matrix().shape[1])).astype(float)
    v = t.aggregate(z)
    prim = (v > 0) & (v < 4)
    L = np.where(prim, np.minimum(v, 2), 0.0)
    U = np.where(prim, 2.0, 0.0)
    nu = v.copy()
    r = suppress(t, v, prim, n_units=nu, lower=L, upper=U, method="hypercube")
    sup = r.suppressed.copy()
    sec = np.flatnonzero(r.secondary)
    if sec.size and rng.random() < 0.7:
        sup[rng.choice(sec)] = False
    cert = audit(t, v, sup, prim, n_units=nu, lower=L, upper=U, intervals="protection",
                 certificates=r.certificates)
    exact = audit(t, v, sup, prim, n_units=nu, lower=L, upper=U, intervals="exact")
    assert cert.protected == exact.protected
    assert cert.unprotected == exact.unprotected



def test_certificates_each_avoiding_one_singleton_prove_against_single_attackers():
    """Two rectangles through a,x: one changes singleton b,y, the other singleton c,z.  Each
    single attacker leaves one of them feasible, so a,x is protected against each (the coalition
    of both is not checked by certificates)."""
    t, v = table_3x3()
    prim = m(t, [("a", "x")])
    r1 = np.array([t.index(k) for k in [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]])
    r2 = np.array([t.index(k) for k in [("a", "x"), ("a", "z"), ("c", "x"), ("c", "z")]])
    sup = np.zeros(t.n_cells, bool)
    sup[np.concatenate([r1, r2])] = True
    nu = v + 5
    nu[t.index(("b", "y"))] = 1
    nu[t.index(("c", "z"))] = 1
    L = U = np.where(prim, 1.0, 0)
    sg = np.array([1.0, -1, -1, 1])
    certs = [(r1, sg), (r1, -sg), (r2, sg), (r2, -sg)]
    a = audit(t, v, sup, prim, n_units=nu, lower=L, upper=U, intervals="protection", certificates=certs)
    assert a.protected and a.proved_by_certificate == 1 and a.n_local_lp == 0
    cell = next(c for c in a.cells if c.index == t.index(("a", "x")))
    assert cell.coalition_protected is None
    # the exact audit agrees
    assert audit(t, v, sup, prim, n_units=nu, lower=L, upper=U, intervals="exact").protected
    # with only the first rectangle the unit of b,y undoes it: certificates prove nothing, the LP
    # finds the attacker
    sup1 = np.zeros(t.n_cells, bool)
    sup1[r1] = True
    a = audit(t, v, sup1, prim, n_units=nu, lower=L, upper=U, intervals="protection",
              certificates=certs[:2])
    assert not a.protected and a.cells[0].attacker == t.index(("b", "y"))
