"""Q-CNN's codebook learning: k-means in every subspace at once (Wu et al., CVPR 2016).

Each subspace ``s`` of a layer holds ``n`` points (the weight sub-vectors
``W[m, s*D:(s+1)*D, kh, kw]`` over every output ``m`` and kernel offset, or
``W[m, s*D:(s+1)*D]`` for an inner product) and gets a codebook of ``K``
codewords minimising ``sum_i ||p_i - c_{a(i)}||^2`` (Lloyd's iteration from a
k-means++ start).  A layer has many small problems (AlexNet's fc6: 2304
subspaces of 4096 points), so they run as one batch: the points are one
array ``[S, n, D]`` and every step (distances, nearest codeword, means) is an
array operation over a chunk of subspaces; only the K seeding steps and the
iterations are Python loops.

Deterministic given the ``numpy.random.Generator`` passed in.
"""
import numpy

# Elements of one chunk's distance table [subspaces, points, codewords].
CHUNK_ELEMENTS = 1 << 23
ITERATIONS = 30


def kmeans(points, codewords, rng, iterations=ITERATIONS):
    """Cluster each subspace's points.

    ``points [S, n, D]``; returns ``(codebooks [S, K, D], labels [S, n],
    iterations run)``: ``labels`` are the nearest codewords of the points, and
    where Lloyd converged within ``iterations`` each codeword is the mean of
    its points.  A subspace with ``n <= K`` points keeps them as codewords
    (the rest repeat the first one): no error at all.
    """
    subspaces, n, dim = points.shape
    if n <= codewords:
        books = numpy.repeat(points[:, :1], codewords, axis=1)
        books[:, :n] = points
        return books, numpy.broadcast_to(numpy.arange(n), (subspaces, n)).copy(), 0
    books = numpy.empty((subspaces, codewords, dim), points.dtype)
    labels = numpy.empty((subspaces, n), numpy.int64)
    step = max(1, CHUNK_ELEMENTS // (n * codewords))
    ran = 0
    for start in range(0, subspaces, step):
        part = slice(start, start + step)
        centres = plus_plus(points[part], codewords, rng)
        books[part], labels[part], done = lloyd(points[part], centres, iterations)
        ran = max(ran, done)
    return books, labels, ran


def _squared_distances(points, centre):
    """``||p - c||^2`` of ``points [B, n, D]`` to one centre per subspace ``[B, D]``."""
    diff = points - centre[:, None, :]
    return numpy.einsum("bnd,bnd->bn", diff, diff, dtype=numpy.float64)


def plus_plus(points, codewords, rng):
    """k-means++ seeds (Arthur & Vassilvitskii): each next centre is a point drawn
    with probability proportional to its squared distance to the nearest centre
    so far (uniformly where every point is a centre already)."""
    batch, n, _ = points.shape
    rows = numpy.arange(batch)
    centres = numpy.empty((batch, codewords) + points.shape[2:], points.dtype)
    centres[:, 0] = points[rows, rng.integers(n, size=batch)]
    nearest = _squared_distances(points, centres[:, 0])
    for j in range(1, codewords):
        cumulative = numpy.cumsum(nearest, axis=1)
        total = cumulative[:, -1]
        draw = rng.random(batch) * total
        # the first point whose cumulative weight passes the draw
        pick = numpy.minimum((cumulative <= draw[:, None]).sum(axis=1), n - 1)
        flat = total <= 0
        if flat.any():
            pick[flat] = rng.integers(n, size=int(flat.sum()))
        centres[:, j] = points[rows, pick]
        numpy.minimum(nearest, _squared_distances(points, centres[:, j]), out=nearest)
    return centres


def nearest_codewords(points, centres):
    """Labels ``[B, n]`` of each point's nearest centre: the argmin over ``k`` of
    ``||c_k||^2 - 2 p.c_k`` (``||p||^2`` is the same for every ``k``; the lowest
    index on a tie)."""
    # a contiguous right operand keeps the batched product on BLAS (40x faster here)
    score = numpy.matmul(points, numpy.ascontiguousarray(-2 * centres.transpose(0, 2, 1)))
    score += numpy.einsum("bkd,bkd->bk", centres, centres)[:, None, :]
    return numpy.argmin(score, axis=2)


def cluster_means(points, labels, codewords):
    """(means ``[B, K, D]`` (float64), counts ``[B, K]``) of the points by label."""
    batch, n, dim = points.shape
    flat = (labels + codewords * numpy.arange(batch)[:, None]).ravel()
    counts = numpy.bincount(flat, minlength=batch * codewords).reshape(batch, codewords)
    sums = numpy.stack([numpy.bincount(flat, weights=points[..., d].ravel(),
                                       minlength=batch * codewords) for d in range(dim)],
                       axis=-1).reshape(batch, codewords, dim)
    return sums / numpy.maximum(counts, 1)[..., None], counts


def lloyd(points, centres, iterations=ITERATIONS):
    """Lloyd's iteration from ``centres``: ``(centres, labels, iterations run)``.

    Each round moves every codeword to the mean of its points, then reassigns
    the points; a subspace leaves the round once no point changes codeword
    (the others go on, up to ``iterations`` rounds).  An empty codeword is
    re-seeded at the point farthest from its own codeword (a different point
    for each empty one), which lowers the error as no mean could.
    """
    codewords = centres.shape[1]
    centres = centres.copy()
    labels = nearest_codewords(points, centres)
    active = numpy.arange(points.shape[0])
    done = 0
    while active.size and done < iterations:
        done += 1
        part, old = points[active], labels[active]
        means, counts = cluster_means(part, old, codewords)
        moved_to = numpy.where(counts[..., None] > 0, means, centres[active]).astype(points.dtype)
        _reseed(part, old, counts, moved_to)
        new = nearest_codewords(part, moved_to)
        centres[active], labels[active] = moved_to, new
        active = active[(new != old).any(axis=1)]
    return centres, labels, done


def _reseed(points, labels, counts, centres):
    """Give each empty codeword of ``centres`` (in place) the point farthest from its
    own codeword."""
    for b in numpy.flatnonzero((counts == 0).any(axis=1)):
        empty = numpy.flatnonzero(counts[b] == 0)
        diff = points[b] - centres[b, labels[b]]
        farthest = numpy.argsort(-numpy.einsum("nd,nd->n", diff, diff), kind="stable")
        centres[b, empty] = points[b, farthest[:len(empty)]]
