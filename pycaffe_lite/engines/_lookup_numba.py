"""Compiled (Numba) table sums of :mod:`.lookup`; importing fails without Numba.

Each kernel checks every index against the codebook size and reports the
first bad one instead of reading outside the table.  Compiled once per
dtype signature and cached on disk (``cache=True``).
"""
import numba


@numba.njit(cache=True, nogil=True)
def conv_sums(table, indices, phases, offsets, run, wide):
    """``wide[m, j] += table[s, indices[m, kk, s], phases[kk], offsets[kk] + j]`` for
    ``j < run``, summed over kernel offsets ``kk`` and subspaces ``s``.

    ``table [S, K, P, F]``, ``indices [M, KK, S]``, ``wide [M, >= run]``.  Returns
    -1, or the output channel of the first index ``>= K``.
    """
    mg, kernel_count, subspaces = indices.shape
    codewords = table.shape[1]
    for m in range(mg):
        acc = wide[m]
        for kk in range(kernel_count):
            phase = phases[kk]
            offset = offsets[kk]
            for s in range(subspaces):
                k = indices[m, kk, s]
                if k >= codewords:
                    return m
                row = table[s, k, phase, offset:offset + run]
                for j in range(run):
                    acc[j] += row[j]
    return -1


@numba.njit(cache=True, nogil=True, fastmath=True)
def fc_sums(table, indices, out):
    """``out[i, m] += sum_s table[i, s, indices[m, s]]``; returns the largest index seen
    (the caller checks it against ``K``; a larger one is clamped, never read past).

    ``table [n, S, K]``, ``indices [M, S]``, ``out [n, M]``.
    """
    n, subspaces, codewords = table.shape
    top = codewords - 1
    largest = 0
    for m in range(indices.shape[0]):
        for i in range(n):
            acc = table[i, 0, 0] * 0  # the table's precision
            for s in range(subspaces):
                k = indices[m, s]
                largest = max(largest, k)
                acc += table[i, s, min(k, top)]
            out[i, m] += acc
    return largest
