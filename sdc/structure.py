"""Table structure: hierarchical dimensions, cell indexing and additivity relations.

A published table is the full cross product of its dimensions' codes.  Each dimension is a
forest of codes (normally a tree with one root, the grand ``"Total"``): every non-leaf code is the
sum of its children.  Hierarchies may have any depth (``Total -> region -> municipality``) and a
parent may have a single child (then parent and child are always equal -- a classic trap that
the constraint matrix captures like any other relation).

Cells are numbered in C order of the product of the dimensions' code lists, so a table with
dimensions of sizes ``(n0, n1, ...)`` is a flat vector of ``n0 * n1 * ...`` cells and
``values.reshape(structure.shape)`` is the natural array view.

Choices (documented here because the suppression and the audit depend on them):

* ``Dimension.codes`` lists *every* code, subtotals and root included, in display order.  Codes
  must be hashable (str, int or tuple) and unique within a dimension.
* ``Dimension.parent`` maps every non-root code to its parent; roots have no entry.  A dimension
  with several roots (no grand total) is allowed; each root is then a separate margin.
* ``TableStructure.constraints()`` returns one row per (dimension, parent code, combination of the
  other dimensions' codes) with ``+1`` at the parent cell and ``-1`` at each child cell, so that
  ``A @ x == 0`` for every consistent table.  Together these are all additivity relations of the
  hierarchical (linked) table; they are linearly dependent (e.g. the grand total appears in one
  relation per dimension) -- that is harmless for LPs and for elimination.
* ``TableStructure.model_matrix()`` returns ``X`` (cells x inner cells, 0/1) with ``x = X @ z``
  where ``z`` are the *inner* cells (all dimensions at leaf codes).  Every consistent table is of
  that form, and the null space of ``constraints()`` equals the column space of ``X``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["Dimension", "TableStructure", "StructureError"]


class StructureError(ValueError):
    """An inconsistent dimension (unknown parent, cycle, duplicate code, ...)."""


@dataclass(frozen=True, eq=False)
class Dimension:
    """One dimension of a table: its codes (display order) and the parent of each non-root code.

    Use :meth:`flat` for a plain categorical variable with a total, :meth:`from_pairs` for a
    hierarchy given as ``child -> parent``.  The constructor validates the hierarchy (parents
    exist, no cycles, unique codes) and raises :class:`StructureError` naming the bad codes.
    """

    name: str
    codes: list
    parent: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        codes = list(self.codes)
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "parent", dict(self.parent))
        pos: dict = {}
        dups = []
        for i, c in enumerate(codes):
            if c in pos:
                dups.append(c)
            pos[c] = i
        if dups:
            raise StructureError(f"dimension {self.name!r}: duplicate codes {dups[:5]!r}")
        unknown = [c for c in self.parent if c not in pos]
        if unknown:
            raise StructureError(f"dimension {self.name!r}: parent given for unknown codes {unknown[:5]!r}")
        bad = sorted({p for p in self.parent.values() if p not in pos}, key=repr)
        if bad:
            raise StructureError(f"dimension {self.name!r}: unknown parent codes {bad[:5]!r}")
        # cycle check: walk up from every code, memoising depth
        depth: dict = {}
        for c in codes:
            path = []
            node = c
            seen = set()
            while node not in depth and node in self.parent:
                if node in seen:
                    raise StructureError(f"dimension {self.name!r}: cycle through code {node!r}")
                seen.add(node)
                path.append(node)
                node = self.parent[node]
            d = depth.get(node, 0)
            for n in reversed(path):
                d += 1
                depth[n] = d
            depth.setdefault(node, 0)
        object.__setattr__(self, "_pos", pos)
        object.__setattr__(self, "_depth", depth)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def flat(cls, name: str, leaf_codes: Iterable[Hashable], total: Hashable = "Total") -> "Dimension":
        """A flat variable: ``total`` first, then the leaf codes, each a child of ``total``."""
        leaves = list(leaf_codes)
        return cls(name, [total, *leaves], {c: total for c in leaves})

    @classmethod
    def from_pairs(
        cls,
        name: str,
        child_to_parent: Mapping[Hashable, Hashable],
        total: Hashable | None = "Total",
        order: Sequence[Hashable] | None = None,
    ) -> "Dimension":
        """A hierarchy from a ``child -> parent`` mapping.

        Codes that appear only as parents and have no parent themselves are hung under ``total``
        (if ``total`` is not None and not already a code in the mapping), so
        ``{"Amsterdam": "NH", "Haarlem": "NH", "Utrecht": "UT"}`` gives
        ``Total -> {NH, UT} -> municipalities``.  Without ``order`` the display order is
        depth-first (parent before its children, children in mapping order).
        """
        par = dict(child_to_parent)
        all_codes = list(dict.fromkeys([*par.keys(), *par.values()]))
        roots = [c for c in all_codes if c not in par]
        if total is not None and total not in all_codes:
            for r in roots:
                par[r] = total
            all_codes.append(total)
        if order is None:
            children: dict = {}
            for c, p in par.items():
                children.setdefault(p, []).append(c)
            top = [c for c in all_codes if c not in par]
            out: list = []
            stack = list(reversed(top))
            visited = set()
            while stack:
                c = stack.pop()
                if c in visited:
                    raise StructureError(f"dimension {name!r}: cycle through code {c!r}")
                visited.add(c)
                out.append(c)
                stack.extend(reversed(children.get(c, [])))
            if len(out) != len(all_codes):
                missing = [c for c in all_codes if c not in visited]
                raise StructureError(f"dimension {name!r}: cycle among codes {missing[:5]!r}")
            codes = out
        else:
            codes = list(order)
        return cls(name, codes, par)

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.codes)

    def __hash__(self) -> int:  # frozen value object; lists inside are treated as immutable
        return hash((self.name, tuple(self.codes), tuple(sorted(self.parent.items(), key=repr))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dimension):
            return NotImplemented
        return self.name == other.name and self.codes == other.codes and self.parent == other.parent

    def position(self, code: Hashable) -> int:
        """Index of ``code`` in :attr:`codes` (KeyError if unknown)."""
        return self._pos[code]  # type: ignore[attr-defined]

    @cached_property
    def children(self) -> dict:
        """``code -> [child codes]`` in display order (leaves have no entry)."""
        ch: dict = {}
        for c in self.codes:
            if c in self.parent:
                ch.setdefault(self.parent[c], []).append(c)
        return ch

    @cached_property
    def leaves(self) -> list:
        """Codes without children, in display order."""
        ch = self.children
        return [c for c in self.codes if c not in ch]

    @cached_property
    def roots(self) -> list:
        return [c for c in self.codes if c not in self.parent]

    def depth(self, code: Hashable) -> int:
        """0 for a root, 1 for its children, ..."""
        return self._depth[code]  # type: ignore[attr-defined]

    def is_leaf(self, code: Hashable) -> bool:
        return code not in self.children

    def ancestor_matrix(self) -> np.ndarray:
        """Bool ``(n_codes, n_codes)``: ``[a, b]`` is True when code ``a`` is ``b`` or an ancestor of ``b``.

        A cell ``s`` *contains* a cell ``p`` (every unit of ``p`` is in ``s``) when this holds in
        every dimension for their codes.
        """
        n = len(self.codes)
        m = np.eye(n, dtype=bool)
        for c in self.codes:
            j = self.position(c)
            node = c
            while node in self.parent:
                node = self.parent[node]
                m[self.position(node), j] = True
        return m

    def relation_matrix(self) -> sp.csr_matrix:
        """``M`` (n_parents x n_codes): +1 at the parent, -1 at each child; one row per parent."""
        rows, cols, vals = [], [], []
        for r, (p, kids) in enumerate(self.children.items()):
            rows.append(r)
            cols.append(self.position(p))
            vals.append(1.0)
            for k in kids:
                rows.append(r)
                cols.append(self.position(k))
                vals.append(-1.0)
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(self.children), len(self.codes)))

    def aggregation_matrix(self) -> sp.csr_matrix:
        """``D`` (n_codes x n_leaves): ``D[c, l] = 1`` if leaf ``l`` is ``c`` or below ``c``."""
        leaf_pos = {c: i for i, c in enumerate(self.leaves)}
        rows, cols = [], []
        for leaf, j in leaf_pos.items():
            node = leaf
            while True:
                rows.append(self.position(node))
                cols.append(j)
                if node not in self.parent:
                    break
                node = self.parent[node]
        return sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(self.codes), len(leaf_pos))
        )


def _kron_chain(mats: Sequence[sp.spmatrix]) -> sp.csr_matrix:
    out = sp.csr_matrix(mats[0])
    for m in mats[1:]:
        out = sp.kron(out, m, format="csr")
    return out


class TableStructure:
    """The cross product of some dimensions: cell numbering and additivity relations.

    ``n_cells`` cells, numbered in C order (last dimension fastest).  Keys are tuples of codes,
    one per dimension.
    """

    def __init__(self, dimensions: Sequence[Dimension]):
        dims = list(dimensions)
        if not dims:
            raise StructureError("a table needs at least one dimension")
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise StructureError(f"duplicate dimension names {names!r}")
        self.dimensions: list[Dimension] = dims
        self.shape: tuple[int, ...] = tuple(len(d) for d in dims)
        self.n_cells: int = int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        dims = ", ".join(f"{d.name}[{len(d)}]" for d in self.dimensions)
        return f"TableStructure({dims}; {self.n_cells} cells)"

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    # ----------------------------------------------------------------- indexing
    def keys(self) -> list[tuple]:
        """All cell keys in cell order."""
        import itertools

        return list(itertools.product(*(d.codes for d in self.dimensions)))

    def index(self, key: Sequence[Hashable]) -> int:
        """Cell number of ``key`` (a tuple with one code per dimension)."""
        if len(key) != len(self.dimensions):
            raise KeyError(f"key {key!r} needs {len(self.dimensions)} codes")
        pos = tuple(d.position(c) for d, c in zip(self.dimensions, key))
        return int(np.ravel_multi_index(pos, self.shape))

    def key(self, index: int) -> tuple:
        """Inverse of :meth:`index`."""
        pos = np.unravel_index(int(index), self.shape)
        return tuple(d.codes[p] for d, p in zip(self.dimensions, pos))

    def positions(self) -> np.ndarray:
        """``(n_cells, n_dims)`` array of per-dimension code positions of every cell."""
        grids = np.indices(self.shape).reshape(len(self.shape), -1)
        return grids.T.copy()

    def contains(self, outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
        """Bool per pair: cell ``outer[i]`` contains cell ``inner[i]`` (ancestor-or-equal in every dimension).

        ``outer``/``inner`` are cell numbers (arrays broadcast against each other).
        """
        o = np.unravel_index(np.asarray(outer, dtype=np.int64), self.shape)
        i = np.unravel_index(np.asarray(inner, dtype=np.int64), self.shape)
        res = np.ones(np.broadcast(o[0], i[0]).shape, dtype=bool)
        for d, m in enumerate(self._ancestor_matrices):
            res &= m[o[d], i[d]]
        return res

    def meet(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The intersection cell of cells ``a`` and ``b`` (arrays broadcast), -1 where empty.

        In each dimension the two codes must be nested (one the ancestor-or-self of the other);
        the meet takes the deeper one.  Units of the meet are exactly the units in both cells.
        """
        ca = np.unravel_index(np.asarray(a, dtype=np.int64), self.shape)
        cb = np.unravel_index(np.asarray(b, dtype=np.int64), self.shape)
        shape = np.broadcast(ca[0], cb[0]).shape
        ok = np.ones(shape, dtype=bool)
        out = []
        for d, m in enumerate(self._ancestor_matrices):
            x, y = np.broadcast_arrays(ca[d], cb[d])
            a_over_b = m[x, y]
            b_over_a = m[y, x]
            ok &= a_over_b | b_over_a
            out.append(np.where(a_over_b, y, x))
        idx = np.ravel_multi_index(tuple(out), self.shape)
        return np.where(ok, idx, -1)

    @cached_property
    def _ancestor_matrices(self) -> list:
        return [d.ancestor_matrix() for d in self.dimensions]

    def nested(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Bool per pair: one of the two cells contains the other."""
        return self.contains(a, b) | self.contains(b, a)

    @cached_property
    def inner_mask(self) -> np.ndarray:
        """Boolean per cell: True for inner cells (every dimension at a leaf code)."""
        m = np.ones(self.shape, dtype=bool)
        for ax, d in enumerate(self.dimensions):
            leaf = np.array([d.is_leaf(c) for c in d.codes])
            sh = [1] * len(self.shape)
            sh[ax] = len(d)
            m &= leaf.reshape(sh)
        return m.ravel()

    # ----------------------------------------------------------------- relations
    def constraints(self) -> sp.csr_matrix:
        """Sparse ``A`` with ``A @ x == 0`` for every additive table ``x``.

        Row blocks per dimension ``d``: ``kron(I_before, M_d, I_after)`` where ``M_d`` is the
        dimension's :meth:`Dimension.relation_matrix`.  Each row is one "line" of the table: a
        parent cell and its children along one dimension, the other dimensions fixed.
        """
        return self._constraints.copy()

    @cached_property
    def _constraints(self) -> sp.csr_matrix:
        blocks = []
        for ax, d in enumerate(self.dimensions):
            m = d.relation_matrix()
            if m.shape[0] == 0:
                continue
            before = int(np.prod(self.shape[:ax], dtype=np.int64))
            after = int(np.prod(self.shape[ax + 1 :], dtype=np.int64))
            blk = sp.kron(sp.identity(before, format="csr"), m, format="csr")
            blk = sp.kron(blk, sp.identity(after, format="csr"), format="csr")
            blocks.append(blk)
        if not blocks:
            return sp.csr_matrix((0, self.n_cells))
        out = sp.vstack(blocks, format="csr")
        out.sum_duplicates()
        return out

    def model_matrix(self) -> sp.csr_matrix:
        """Sparse 0/1 ``X`` (n_cells x n_inner) with ``x = X @ z`` for inner values ``z``.

        Inner cells are ordered in C order of the product of the dimensions' leaf lists.
        """
        return self._model_matrix.copy()

    @cached_property
    def _model_matrix(self) -> sp.csr_matrix:
        return _kron_chain([d.aggregation_matrix() for d in self.dimensions])

    @cached_property
    def inner_index(self) -> np.ndarray:
        """Cell numbers of the inner cells, in the column order of :meth:`model_matrix`."""
        leaf_pos = [np.array([d.position(c) for c in d.leaves], dtype=np.int64) for d in self.dimensions]
        grids = np.meshgrid(*leaf_pos, indexing="ij")
        return np.ravel_multi_index(tuple(g.ravel() for g in grids), self.shape).astype(np.int64)

    def aggregate(self, inner_values: np.ndarray) -> np.ndarray:
        """Full table (all cells incl. margins) from the inner cells' values.

        ``inner_values`` is either flat (model-matrix column order) or shaped like the product of
        the leaf lists.  Works for any additive statistic (counts, sums, unit counts).
        """
        z = np.asarray(inner_values).reshape(-1)
        return np.asarray(self._model_matrix @ z).reshape(-1)

    def is_additive(self, values: np.ndarray, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        """True if ``values`` satisfy every relation (up to tolerance)."""
        v = np.asarray(values, dtype=float).reshape(-1)
        r = self._constraints @ v
        scale = np.abs(self._constraints) @ np.abs(v)
        return bool(np.all(np.abs(r) <= atol + rtol * scale))
