"""Helpers shared by the sdc tests (a unique module name: tests have no packages)."""

from __future__ import annotations

import numpy as np


def mask(t, keys) -> np.ndarray:
    """Boolean cell mask of a TableStructure with the given cell keys set."""
    out = np.zeros(t.n_cells, bool)
    for k in keys:
        out[t.index(k)] = True
    return out
