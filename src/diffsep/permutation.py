"""The best assignment of K estimates to K references: brute force over the K! orders.

Used to align the sources of consecutive windows (:mod:`diffsep.chunking`) and for
permutation-invariant scoring (:mod:`diffsep.metrics`).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

MAX_BRUTE_FORCE_SOURCES = 8
"""Largest K searched (8! = 40320 orders); more sources raise ValueError."""


@functools.cache
def all_permutations(num_sources: int) -> np.ndarray:
    """(K!, K) int64 array of every permutation of range(K), in lexicographic order (identity
    first). Read-only: the array is cached."""
    orders = np.array(list(itertools.permutations(range(num_sources))), dtype=np.int64)
    orders = orders.reshape(-1, num_sources)
    orders.flags.writeable = False
    return orders


def best_permutation(score_matrix: np.ndarray) -> tuple[int, ...]:
    """The permutation ``p`` maximising ``sum_k score_matrix[k, p[k]]``.

    ``score_matrix`` (K, K): rows references, columns estimates. Ties keep the earliest
    permutation in lexicographic order (the identity first). K above
    :data:`MAX_BRUTE_FORCE_SOURCES` raises ValueError.
    """
    k = score_matrix.shape[0]
    if score_matrix.shape != (k, k):
        raise ValueError(f"expected a square (K, K) score matrix, got {score_matrix.shape}")
    if k > MAX_BRUTE_FORCE_SOURCES:
        raise ValueError(
            f"brute-force permutation search supports up to {MAX_BRUTE_FORCE_SOURCES} sources, "
            f"got {k}"
        )
    perms = all_permutations(k)
    totals = score_matrix[np.arange(k)[None, :], perms].sum(axis=1)
    return tuple(int(i) for i in perms[int(np.argmax(totals))])
