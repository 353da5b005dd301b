"""The one numeric gradient checker every layer test uses.

Like Caffe's ``GradientChecker`` (central differences with a fixed step and
threshold, a "kink" region that is skipped) but with the objective
``L = sum_i <top_i, w_i>`` for fixed random weights ``w_i``: one backward pass
gives the analytic gradient of every bottom and parameter element, which is
compared with ``(L(x + h) - L(x - h)) / 2h`` element by element.

Run it in float64 (``make_layer(..., dtype=numpy.float64)``).
"""
import numpy
from google.protobuf import text_format

from ..blob import Blob
from .. import rng
from ..backend import to_numpy
from ..layer import TRAIN, create_layer


def make_layer(param, bottoms, phase=TRAIN, dtype=numpy.float64, xp=numpy, num_tops=None):
    """Build and set up one layer.

    ``param``: a LayerParameter or its prototxt text (``'type: "ReLU"'``).
    ``bottoms``: arrays for the bottom blobs.  Tops are created to match
    ``param.top`` (or ``num_tops``).  Returns ``(layer, bottom, top)``.
    """
    from ..proto import caffe_pb2
    if isinstance(param, str):
        param = text_format.Parse(param, caffe_pb2.LayerParameter())
    if not param.name:
        param.name = param.type.lower() or "layer"
    bottom = []
    for array in bottoms:
        blob = Blob(numpy.shape(array), xp=xp, dtype=dtype)
        blob.data[...] = xp.asarray(array, dtype=dtype)
        bottom.append(blob)
    n_top = num_tops if num_tops is not None else max(len(param.top), 1)
    top = [Blob((), xp=xp, dtype=dtype) for _ in range(n_top)]
    layer = create_layer(param, phase=phase, xp=xp, dtype=dtype)
    layer.set_up(bottom, top)
    return layer, bottom, top


def _objective(layer, bottom, top, weights, seed):
    rng.set_random_seed(seed)  # random layers (Dropout) draw the same mask every time
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return sum(float((t.data * w).sum()) for t, w in zip(top, weights))


def check_gradient(layer, bottom, top, check_bottom=None, check_params=True,
                   step=1e-3, threshold=1e-4, kink=None, kink_range=-1.0,
                   top_ids=None, seed=1701, max_elements=400):
    """Assert that analytic and numeric gradients agree.

    ``check_bottom``: indices of bottoms to check (default: all).
    ``top_ids``: which tops enter the objective (default: all).
    ``kink``/``kink_range``: skip elements whose value is within
    ``kink_range`` of ``kink`` (e.g. ReLU at 0), as Caffe's checker does.
    ``threshold`` is relative to ``max(|analytic|, |numeric|, 1)``.
    At most ``max_elements`` elements per blob are probed (evenly spaced).
    """
    rs = numpy.random.RandomState(seed)
    xp = layer.xp
    top_ids = range(len(top)) if top_ids is None else top_ids
    rng.set_random_seed(seed)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    weights = [xp.zeros(t.shape, dtype=t.dtype) for t in top]
    for i in top_ids:
        weights[i] = xp.asarray(rs.standard_normal(top[i].shape).astype(top[i].dtype))
    check_bottom = list(range(len(bottom))) if check_bottom is None else list(check_bottom)
    params = list(layer.blobs) if check_params else []

    for b in bottom:
        b.diff[...] = 0
    for p in params:
        p.diff[...] = 0
    for t, w in zip(top, weights):
        t.diff[...] = w
    propagate = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, propagate, bottom)
    targets = [("bottom", i, bottom[i]) for i in check_bottom]
    targets += [("param", j, p) for j, p in enumerate(params)]
    analytic = {(kind, i): to_numpy(b.diff).astype(numpy.float64) for kind, i, b in targets}

    failures = []
    for kind, i, blob in targets:
        flat = blob.data.reshape(-1)
        n = flat.size
        probe = range(n) if n <= max_elements else numpy.linspace(0, n - 1, max_elements).astype(int)
        grad = analytic[(kind, i)].reshape(-1)
        for k in probe:
            x = float(flat[k])
            if kink is not None and abs(x - kink) <= kink_range:
                continue
            flat[k] = x + step
            plus = _objective(layer, bottom, top, weights, seed)
            flat[k] = x - step
            minus = _objective(layer, bottom, top, weights, seed)
            flat[k] = x
            numeric = (plus - minus) / (2 * step)
            scale = max(abs(numeric), abs(grad[k]), 1.0)
            if abs(numeric - grad[k]) > threshold * scale:
                failures.append(f"{kind} {i} element {k}: analytic {grad[k]:.6g} "
                                f"numeric {numeric:.6g}")
    _objective(layer, bottom, top, weights, seed)
    assert not failures, (f"{layer.type} '{layer.name}': {len(failures)} gradient mismatches, "
                          "first: " + "; ".join(failures[:5]))
