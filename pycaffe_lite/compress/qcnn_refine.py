"""Q-CNN's error correction: codebooks and assignments fitted to a layer's responses.

After k-means on the weights, Q-CNN (Wu et al., CVPR 2016, "quantization
with error correction") minimises the error of the layer's *response*

    E = sum_{m, n} (t[m, n] - sum_s sum_k w_s[m, k] . x_s[g(m), n, k])^2,

over calibration columns ``n``: ``x`` the layer's inputs computed by the net
whose earlier layers are already quantised, ``t = y - b`` the full-precision
net's responses less the bias, ``w_s[m, k] = C_s[I[m, k, s]]`` the codeword
that output ``m`` uses at kernel offset ``k`` in subspace ``s`` (``KK = 1``
for an inner product).  Block coordinate descent, one subspace at a time
(the other subspaces' contribution fixed in the residual), first the
codebook, then the assignments.  For subspace ``s`` let ``r_m`` be the
residual without it, ``H_g = X_sg^T X_sg`` (``[KK D, KK D]``, once per
subspace) and ``q_m = X_sg(m)^T r_m`` (``[KK, D]``); its error is
``sum_m ||r_m||^2 - 2 <w_m, q_m> + w_m^T H_g(m) w_m``.

* Codebook (least squares for fixed assignments): with ``d`` the K codewords
  stacked, ``G d = b`` where ``b_j = sum_{(m,k): I[m,k,s]=j} q_m[k]`` and
  ``G_jj' = sum_m sum_{k,k': I[m,k,s]=j, I[m,k',s]=j'} H_g(m)[k, k']``.  For an
  inner product ``G`` is block diagonal, ``G_jj = sum_{m in L_j} H``: the
  codeword is ``H^-1 sum_{m in L_j} q_m / |L_j|``, the least-squares fit of the
  mean residual of its outputs, Q-CNN's update.
* Assignments: per output, the codeword minimising the error with the rest
  fixed.  An inner product's choice is exact (``argmin_j d_j^T H d_j - 2 d_j .
  q_m``); a convolution's offsets interact through ``H[k, k']``, so they are
  chosen one offset after another (``q_m[k]`` corrected by the other offsets'
  ``H[k, k'] w_m[k']``), which also never raises the error.

Both steps minimise E over their block, so E never increases (the codebook
step is checked and skipped in the rare case rounding would raise it).  The
paper's own equations were not at hand when this was written: this is the
block coordinate descent its text describes, with the closed forms above.
"""
import numpy

# The codebook solve adds RIDGE x (mean diagonal of G) to G's diagonal: among
# equally good codebooks (unused codewords, input directions no sample excites)
# it keeps the current codewords, without moving the optimum measurably.
RIDGE = 1e-10
# A sweep visits the subspaces in blocks about this many input values wide: one
# product with the residual per block instead of two per subspace (the residual
# is the big array: AlexNet's fc6 has 2304 subspaces of 4 values).
BLOCK_WIDTH = 256
ROW_CHUNK = 512             # outputs per product when the residual is recomputed


class Refinement:
    """The error correction of one layer.

    ``x [G, N, KK, S, D]``: input columns (zero-padded subspaces); ``target [M,
    N]``: responses less bias; ``codebooks [S, K, D]`` and ``indices [M, KK, S]``:
    the start (k-means); ``reference``: ``||y||^2`` for :meth:`relative_error`
    (default ``||target||^2``).  The fitted values are in ``codebooks`` and
    ``indices`` (float64, int64).
    """

    def __init__(self, x, target, codebooks, indices, reference=None):
        groups, n, kk, subspaces, dim = x.shape
        width = kk * dim
        # [G, N, S, KK*D]: a subspace's columns are a strided view BLAS takes as it is
        self.x = numpy.ascontiguousarray(numpy.asarray(x, numpy.float64).transpose(
            0, 1, 3, 2, 4)).reshape(groups, n, subspaces, width)
        self.target = numpy.asarray(target, numpy.float64)
        self.codebooks = numpy.array(codebooks, numpy.float64)
        self.indices = numpy.array(indices, numpy.int64)
        self.groups, self.offsets, self.dim, self.width = groups, kk, dim, width
        self.per_group = self.target.shape[0] // groups
        step = max(1, BLOCK_WIDTH // width)
        self.blocks = [range(s, min(s + step, subspaces)) for s in range(0, subspaces, step)]
        # X_b^T X_b per block and group; H_s = its diagonal blocks (views)
        self.cross, self.grams = [], []
        for block in self.blocks:
            columns = [self._block_columns(g, block) for g in range(groups)]
            self.cross.append([c.T @ c for c in columns])
            for i in range(len(block)):
                cols = slice(i * width, (i + 1) * width)
                self.grams.append([c[cols, cols] for c in self.cross[-1]])
        self.reference = (float(numpy.sum(self.target ** 2)) if reference is None
                          else float(reference))
        self.reset_residual()

    def _block_columns(self, g, block):
        """``[N, len(block) KK D]``: group ``g``'s columns of the block's subspaces."""
        return self.x[g, :, block.start:block.stop].reshape(self.x.shape[1], -1)

    # --- the residual -----------------------------------------------------------
    def weights(self, s):
        """``w_s [M, KK, D]``: the codewords subspace ``s`` uses."""
        return self.codebooks[s][self.indices[:, :, s]]

    def _blocks(self, array):
        """``array [M, ...]`` split by group."""
        step = self.per_group
        return [array[g * step:(g + 1) * step] for g in range(self.groups)]

    def response(self, w, s):
        """``[M, N]``: what weights ``w [M, KK, D]`` in subspace ``s`` add to the responses."""
        parts = [block.reshape(len(block), -1) @ self.x[g, :, s].T
                 for g, block in enumerate(self._blocks(w))]
        return numpy.concatenate(parts)

    def reset_residual(self):
        """Recompute the residual ``t - response`` from scratch (no drift): one product
        per group and chunk of outputs."""
        groups, n, subspaces, _ = self.x.shape
        self.residual = self.target.copy()
        every = numpy.arange(subspaces)
        for g in range(groups):
            columns = self.x[g].reshape(n, -1)
            for start in range(g * self.per_group, (g + 1) * self.per_group, ROW_CHUNK):
                rows = slice(start, min(start + ROW_CHUNK, (g + 1) * self.per_group))
                w = self.codebooks[every, self.indices[rows]]            # [r, KK, S, D]
                flat = w.transpose(0, 2, 1, 3).reshape(len(w), -1)
                self.residual[rows] -= flat @ columns.T

    def error(self):
        return float(numpy.sum(self.residual ** 2))

    def relative_error(self):
        """``||y - y_hat|| / ||y||`` on the calibration columns."""
        return float(numpy.sqrt(self.error() / self.reference)) if self.reference else 0.0

    def correlations(self, s, w):
        """``q [M, KK, D]``: ``X_s^T r`` with ``r`` the residual without subspace ``s``
        (``r = residual + X_s w``, so ``q = X_s^T residual + H w``)."""
        parts = [rows @ self.x[g, :, s] + block.reshape(len(block), -1) @ self.grams[s][g]
                 for g, (rows, block) in enumerate(zip(self._blocks(self.residual),
                                                       self._blocks(w)))]
        return numpy.concatenate(parts).reshape(w.shape)

    # --- the two steps ----------------------------------------------------------------
    def normal_equations(self, s, q):
        """``(G, b)`` of the codebook step of subspace ``s`` (see the module doc), as
        ``[K D, K D]`` and ``[K D]``."""
        codewords, dim, kk = self.codebooks.shape[1], self.dim, self.offsets
        chosen = self.indices[:, :, s]
        b = numpy.stack([numpy.bincount(chosen.ravel(), weights=q[:, :, d].ravel(),
                                        minlength=codewords) for d in range(dim)], axis=1)
        gram = numpy.zeros((codewords * codewords, dim, dim))
        for g, picked in enumerate(self._blocks(chosen)):
            pair = (picked[:, :, None] * codewords + picked[:, None, :]).ravel()
            h = self.grams[s][g].reshape(kk, dim, kk, dim)
            for d in range(dim):
                for e in range(dim):
                    values = numpy.broadcast_to(h[:, d, :, e], (len(picked), kk, kk))
                    gram[:, d, e] += numpy.bincount(pair, weights=values.ravel(),
                                                    minlength=codewords * codewords)
        gram = gram.reshape(codewords, codewords, dim, dim).transpose(0, 2, 1, 3)
        return gram.reshape(codewords * dim, codewords * dim), b.ravel()

    def codebook_step(self, s, q):
        """Least-squares codebook of subspace ``s`` for its assignments; returns the
        change of the error (<= 0)."""
        gram, b = self.normal_equations(s, q)
        old = self.codebooks[s].ravel()
        rhs = b - gram @ old
        scale = float(numpy.trace(gram)) / len(old)
        ridge = RIDGE * scale if scale > 0 else 1.0
        delta = numpy.linalg.solve(gram + ridge * numpy.eye(len(old)), rhs)
        change = float(delta @ gram @ delta - 2 * delta @ rhs)
        if change < 0:
            self.codebooks[s] = (old + delta).reshape(self.codebooks[s].shape)
            return change
        return 0.0

    def assignment_step(self, s, q):
        """Each output's codewords of subspace ``s``, best given the rest, one kernel
        offset after another."""
        book = self.codebooks[s]                                        # [K, D]
        chosen = self.indices[:, :, s]                                  # a view: written
        w = book[chosen]                                                # [M, KK, D]
        kk, dim = self.offsets, self.dim
        for g in range(self.groups):
            rows = slice(g * self.per_group, (g + 1) * self.per_group)
            gram = self.grams[s][g]
            h = gram.reshape(kk, dim, kk, dim)
            hw = (w[rows].reshape(self.per_group, -1) @ gram).reshape(-1, kk, dim)
            for k in range(kk):
                h_kk = h[k, :, k, :]
                quad = numpy.einsum("jd,de,je->j", book, h_kk, book)
                own = w[rows, k]
                e = q[rows, k] - hw[:, k] + own @ h_kk
                best = numpy.argmin(quad[None, :] - 2 * e @ book.T, axis=1)
                delta = book[best] - own
                if not delta.any():
                    continue
                hw += (delta @ h[:, :, k, :].reshape(kk * dim, dim).T).reshape(-1, kk, dim)
                w[rows, k] = book[best]
                chosen[rows, k] = best

    def visit(self, s):
        """One codebook step and one assignment step of subspace ``s``."""
        before = self.weights(s)
        q = self.correlations(s, before)
        self.codebook_step(s, q)
        self.assignment_step(s, q)
        self.residual -= self.response(self.weights(s) - before, s)

    def _visit_block(self, number):
        """:meth:`visit` of each subspace of block ``number`` in turn, the residual
        updated once at the end: subspace ``s`` sees the earlier ones' changes through
        ``q_s = X_s^T R_start - sum_{s' < s} dw_s' X_s'^T X_s + H_s w_s``."""
        block, width = self.blocks[number], self.width
        columns = [self._block_columns(g, block) for g in range(self.groups)]
        start = [rows @ c for rows, c in zip(self._blocks(self.residual), columns)]
        changes = [numpy.zeros_like(part) for part in start]
        for i, s in enumerate(block):
            cols, done = slice(i * width, (i + 1) * width), slice(0, i * width)
            before = self.weights(s)
            q = numpy.concatenate([
                start[g][:, cols] - changes[g][:, done] @ self.cross[number][g][done, cols]
                + w.reshape(len(w), -1) @ self.grams[s][g]
                for g, w in enumerate(self._blocks(before))]).reshape(before.shape)
            self.codebook_step(s, q)
            self.assignment_step(s, q)
            for g, delta in enumerate(self._blocks(self.weights(s) - before)):
                changes[g][:, cols] = delta.reshape(len(delta), -1)
        for rows, change, c in zip(self._blocks(self.residual), changes, columns):
            rows -= change @ c.T

    def sweep(self):
        """Visit every subspace once (block after block); returns the relative error."""
        for number in range(len(self.blocks)):
            self._visit_block(number)
        self.reset_residual()
        return self.relative_error()


def refine(refinement, iterations, progress=None, tolerance=1e-6):
    """Run up to ``iterations`` sweeps (fewer once a sweep improves the relative error by
    less than ``tolerance`` of it); returns the relative errors, the start first.
    ``progress``: a tqdm-like bar (``update()``, ``set_postfix_str``)."""
    history = [refinement.relative_error()]
    for _ in range(iterations):
        history.append(refinement.sweep())
        if progress is not None:
            progress.update()
            progress.set_postfix_str(f"error {history[-1]:.4f}")
        if history[-2] - history[-1] <= tolerance * history[-2]:
            break
    return history
