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
    -1, or the output channel of the first index ``>= K``.  Four subspaces per
    pass over a run: one load and store of ``wide`` per four table rows.
    """
    mg, kernel_count, subspaces = indices.shape
    codewords = table.shape[1]
    for m in range(mg):
        acc = wide[m]
        for kk in range(kernel_count):
            phase = phases[kk]
            lo = offsets[kk]
            hi = lo + run
            s = 0
            while s + 4 <= subspaces:
                k0, k1 = indices[m, kk, s], indices[m, kk, s + 1]
                k2, k3 = indices[m, kk, s + 2], indices[m, kk, s + 3]
                if max(max(k0, k1), max(k2, k3)) >= codewords:
                    return m
                r0, r1 = table[s, k0, phase, lo:hi], table[s + 1, k1, phase, lo:hi]
                r2, r3 = table[s + 2, k2, phase, lo:hi], table[s + 3, k3, phase, lo:hi]
                for j in range(run):
                    acc[j] += (r0[j] + r1[j]) + (r2[j] + r3[j])
                s += 4
            while s < subspaces:
                k = indices[m, kk, s]
                if k >= codewords:
                    return m
                row = table[s, k, phase, lo:hi]
                for j in range(run):
                    acc[j] += row[j]
                s += 1
    return -1


@numba.njit(cache=True, nogil=True)
def fc_sums(table, indices_t, out):
    """``out[i, m] += sum_s table[i, s, indices_t[s, m]]``.

    ``table [n, S, K]``, ``indices_t [S, M]`` (subspace-major: Q-CNN's order, each
    output's entries added along a contiguous row of indices), ``out [n, M]``.
    Returns -1, or the subspace of the first index ``>= K``.  Eight subspaces
    per pass: one load and store of ``out[i, m]`` per eight lookups.
    """
    n, subspaces, codewords = table.shape
    outputs = indices_t.shape[1]
    for s in range(subspaces):
        row = indices_t[s]
        top = 0
        for m in range(outputs):
            top = max(top, row[m])
        if top >= codewords:
            return s
    for i in range(n):
        o = out[i]
        s = 0
        while s + 8 <= subspaces:
            t0, t1, t2, t3 = table[i, s], table[i, s + 1], table[i, s + 2], table[i, s + 3]
            t4, t5, t6, t7 = table[i, s + 4], table[i, s + 5], table[i, s + 6], table[i, s + 7]
            r0, r1, r2, r3 = indices_t[s], indices_t[s + 1], indices_t[s + 2], indices_t[s + 3]
            r4, r5, r6, r7 = indices_t[s + 4], indices_t[s + 5], indices_t[s + 6], indices_t[s + 7]
            for m in range(outputs):
                o[m] += (((t0[r0[m]] + t1[r1[m]]) + (t2[r2[m]] + t3[r3[m]]))
                         + ((t4[r4[m]] + t5[r5[m]]) + (t6[r6[m]] + t7[r7[m]])))
            s += 8
        while s < subspaces:
            t0, r0 = table[i, s], indices_t[s]
            for m in range(outputs):
                o[m] += t0[r0[m]]
            s += 1
    return -1
