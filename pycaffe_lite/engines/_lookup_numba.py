"""Compiled (Numba) table sums of :mod:`.lookup`; importing fails without Numba.

The callers check every index against the codebook size first (NumPy's
vectorised max: 0.2 ms for AlexNet's fc6 uint8 indices, where a check per
lookup inside the FC kernel cost 1.7 ms), so the kernels never read outside a
table.  Single-threaded: Numba's ``parallel=True`` (a ``prange`` over outputs)
measured slower even on one thread (AlexNet's fc6 sums 8.1 ms against 5.7 ms
serial on this 2-core machine).  Compiled once per dtype signature and cached
on disk (``cache=True``).
"""
import numba


@numba.njit(cache=True, nogil=True)
def conv_sums(table, indices, phases, offsets, run, wide):
    """``wide[m, j] += table[s, indices[m, kk, s], phases[kk], offsets[kk] + j]`` for
    ``j < run``, summed over kernel offsets ``kk`` and subspaces ``s``.

    ``table [S, K, P, F]``, ``indices [M, KK, S]``, ``wide [M, >= run]``.  Four
    subspaces per pass over a run: one load and store of ``wide`` per four
    table rows.
    """
    mg, kernel_count, subspaces = indices.shape
    for m in range(mg):
        acc = wide[m]
        for kk in range(kernel_count):
            phase = phases[kk]
            lo = offsets[kk]
            hi = lo + run
            s = 0
            while s + 4 <= subspaces:
                r0 = table[s, indices[m, kk, s], phase, lo:hi]
                r1 = table[s + 1, indices[m, kk, s + 1], phase, lo:hi]
                r2 = table[s + 2, indices[m, kk, s + 2], phase, lo:hi]
                r3 = table[s + 3, indices[m, kk, s + 3], phase, lo:hi]
                for j in range(run):
                    acc[j] += (r0[j] + r1[j]) + (r2[j] + r3[j])
                s += 4
            while s < subspaces:
                row = table[s, indices[m, kk, s], phase, lo:hi]
                for j in range(run):
                    acc[j] += row[j]
                s += 1


@numba.njit(cache=True, nogil=True)
def fc_sums(table, indices_t, out):
    """``out[i, m] += sum_s table[i, s, indices_t[s, m]]``.

    ``table [n, S, K]``, ``indices_t [S, M]`` (subspace-major: Q-CNN's order, each
    output's entries added along a contiguous row of indices), ``out [n, M]``.
    Eight subspaces per pass: one load and store of ``out[i, m]`` per eight
    lookups.
    """
    n, subspaces, _ = table.shape
    outputs = indices_t.shape[1]
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
