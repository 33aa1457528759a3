"""Retrieval contexts for tables with more train rows than a PFN's context holds (after
LoCalPFN, Thomas et al. 2024): the train rows are cut into cells by k-means, about a quarter of
a context's rows each, and every test row is predicted from the context of its cell: half a
random sample of all train rows (fixed per member) and half the train rows nearest to the
cell's centre. With classes, the nearest rows are drawn per class in proportion to the class's
share of the train rows (each class keeps at least one), so a context is local without losing
the classes' balance. A test row's context depends only on where the row lies, never on the
other rows it is predicted with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

CELL_FRACTION = 4  # a cell holds about 1/CELL_FRACTION of a context's rows
KMEANS_ROWS_PER_CELL = 50  # k-means is fitted on at most this many sampled rows per cell


@dataclass
class Retrieval:
    """The train rows x [n, f] and targets y [n] of one ensemble member, cut into cells, with
    each cell's context; see the module docstring."""

    x: np.ndarray
    y: np.ndarray
    cells: KMeans
    contexts_: np.ndarray  # [cells, size] the context rows of each cell

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, size: int, classes: bool, seed: int) -> Retrieval:
        """Cells and their contexts over the train rows x [n, f] (n > size) with targets y [n];
        ``classes``: y holds class ids, and the nearest rows are drawn per class."""
        n = len(x)
        if n <= size:
            raise ValueError(f"retrieval needs more train rows ({n}) than a context holds ({size})")
        rng = np.random.RandomState(seed)
        random_rows = np.sort(rng.choice(n, size - size // 2, replace=False))
        rest = np.setdiff1d(np.arange(n), random_rows)  # the rows the nearest half is drawn from
        pools = [rest[y[rest] == c] for c in np.unique(y[rest])] if classes else [rest]
        n_cells = math.ceil(n / max(1, size // CELL_FRACTION))
        sample = rng.choice(n, min(n, KMEANS_ROWS_PER_CELL * n_cells), replace=False)
        cells = KMeans(n_clusters=n_cells, n_init=1, max_iter=50, random_state=seed).fit(x[sample])
        centres = cells.cluster_centers_.astype(x.dtype)  # [cells, f]
        nearest = [
            rows[NearestNeighbors().fit(x[rows]).kneighbors(centres, k, return_distance=False)]  # [cells, k]
            for rows, k in zip(pools, _quotas([len(rows) for rows in pools], size // 2), strict=True)
            if k
        ]
        contexts = np.concatenate([np.broadcast_to(random_rows, (n_cells, len(random_rows))), *nearest], axis=1)
        return cls(x, y, cells, contexts)

    def contexts(self, xq: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(test rows, context rows [size]) for every cell that the test rows xq [m, f] fall in."""
        cell = self.cells.predict(xq)  # [m]
        return [(np.flatnonzero(cell == c), self.contexts_[c]) for c in np.unique(cell)]


def _quotas(sizes: list[int], count: int) -> np.ndarray:
    """Nearest rows per class [c] from classes of ``sizes`` rows: ``count`` in all, by the
    classes' shares, at least one each."""
    sizes_ = np.array(sizes)
    shares = sizes_ * count / sizes_.sum()
    quotas = np.minimum(sizes_, np.maximum(1, np.floor(shares))).astype(int)
    while quotas.sum() < count:  # the remainder to the classes furthest below their share
        quotas[np.argmax(np.where(quotas < sizes_, shares - quotas, -np.inf))] += 1
    while quotas.sum() > count:  # one row per class can overshoot with many small classes
        quotas[np.argmax(quotas)] -= 1
    return quotas
