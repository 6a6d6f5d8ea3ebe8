"""Tests for sdc.structure: hierarchy validation, indexing, additivity relations."""

import numpy as np
import pytest

from sdc.structure import Dimension, StructureError, TableStructure


def region_dim():
    return Dimension.from_pairs("mun", {"a": "R1", "b": "R1", "c": "R2"})


def test_flat_dimension():
    d = Dimension.flat("sex", ["m", "f"])
    assert d.codes == ["Total", "m", "f"]
    assert d.parent == {"m": "Total", "f": "Total"}
    assert d.leaves == ["m", "f"]
    assert d.roots == ["Total"]


def test_from_pairs_depth_first_order_and_total():
    d = region_dim()
    assert d.codes == ["Total", "R1", "a", "b", "R2", "c"]
    assert d.parent["R1"] == "Total" and d.parent["c"] == "R2"
    assert d.depth("Total") == 0 and d.depth("R2") == 1 and d.depth("a") == 2
    assert d.leaves == ["a", "b", "c"]


def test_validation_errors():
    with pytest.raises(StructureError, match="duplicate"):
        Dimension("x", ["Total", "a", "a"], {"a": "Total"})
    with pytest.raises(StructureError, match="unknown parent"):
        Dimension("x", ["Total", "a"], {"a": "Nope"})
    with pytest.raises(StructureError, match="cycle"):
        Dimension("x", ["a", "b"], {"a": "b", "b": "a"})
    with pytest.raises(StructureError, match="duplicate dimension"):
        TableStructure([Dimension.flat("x", [1]), Dimension.flat("x", [2])])


def test_index_key_roundtrip():
    t = TableStructure([region_dim(), Dimension.flat("sex", ["m", "f"])])
    assert t.n_cells == 18 and t.shape == (6, 3)
    keys = t.keys()
    assert len(keys) == 18
    for i, k in enumerate(keys):
        assert t.index(k) == i
        assert t.key(i) == k
    assert t.index(("R1", "f")) == 1 * 3 + 2


def test_constraints_exact_null_space():
    """A @ X == 0 and rank(A) + rank(X) == n_cells: the relations are exactly the additivity."""
    rng = np.random.default_rng(1)
    t = TableStructure([region_dim(), Dimension.flat("sex", ["m", "f"]),
                        Dimension.from_pairs("age", {"0-9": "young", "10-19": "young", "20+": "old"})])
    A = t.constraints().toarray()
    X = t.model_matrix().toarray()
    assert np.abs(A @ X).max() == 0
    assert np.linalg.matrix_rank(A) + np.linalg.matrix_rank(X) == t.n_cells
    x = t.aggregate(rng.integers(0, 9, X.shape[1]))
    assert t.is_additive(x)
    x[0] += 1
    assert not t.is_additive(x)
    # one row per (dimension, parent, other-dims combination)
    n_rows = sum(len(d.children) * t.n_cells // len(d) for d in t.dimensions)
    assert A.shape == (n_rows, t.n_cells)


def test_inner_cells():
    t = TableStructure([region_dim(), Dimension.flat("sex", ["m", "f"])])
    inner = t.inner_mask
    assert inner.sum() == 6
    assert set(t.inner_index.tolist()) == set(np.flatnonzero(inner).tolist())
    x = t.aggregate(np.arange(6))
    assert x[t.index(("Total", "Total"))] == 15
    assert x[t.index(("R2", "Total"))] == x[t.index(("c", "Total"))]


def test_single_child_parent_relation():
    d = Dimension.from_pairs("g", {"only": "P"})
    t = TableStructure([d])
    A = t.constraints().toarray()
    # Total = P, P = only
    assert A.shape == (2, 3)
    assert t.is_additive(np.array([4.0, 4.0, 4.0]))


def test_containment():
    t = TableStructure([region_dim(), Dimension.flat("sex", ["m", "f"])])
    i = t.index
    assert t.contains(i(("Total", "Total")), i(("a", "m")))
    assert t.contains(i(("R1", "m")), i(("a", "m")))
    assert not t.contains(i(("R1", "m")), i(("a", "f")))
    assert not t.contains(i(("R2", "Total")), i(("a", "m")))
    assert t.contains(i(("a", "m")), i(("a", "m")))
    assert t.nested(np.array([i(("a", "m"))]), np.array([i(("R1", "Total"))]))[0]
    assert not t.nested(i(("a", "m")), i(("b", "Total")))
