"""Shared pieces of the benchmarks: threads, timing, FLOP counts, models, tables.

Import this module before NumPy (``configure_threads`` sets the BLAS thread
count through the environment when NumPy is not loaded yet, and through
threadpoolctl when it is).
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYCAFFE_LITE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"
MODELS = FIXTURES / "models"
ALEXNET = FIXTURES / "bvlc" / "models" / "bvlc_alexnet" / "deploy.prototxt"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

if str(REPO) not in sys.path:       # run from a checkout without installing
    sys.path.insert(0, str(REPO))


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a fast smoke run: fewer repeats, smaller cases")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for NumPy's BLAS and for OpenCV (default: all cores, %(default)s)")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed runs per case (best of them is reported)")
    return p


def configure_threads(threads):
    """Give NumPy's BLAS, our own thread pool and OpenCV the same thread count.

    pycaffe_lite is loaded before NumPy, as under ``caffe_lite``, so that its
    OpenBLAS setting applies (see ``pycaffe_lite/parallel.py``).
    """
    if "numpy" not in sys.modules:
        for var in _THREAD_VARS:
            os.environ[var] = str(threads)
        import pycaffe_lite  # noqa: F401  (before NumPy)
    else:
        try:
            import threadpoolctl
            threadpoolctl.threadpool_limits(threads)
        except ImportError:
            print(f"warning: NumPy already loaded and threadpoolctl missing; BLAS threads "
                  f"not set to {threads}", file=sys.stderr)
    from pycaffe_lite import parallel
    parallel.set_num_threads(threads)
    import cv2
    cv2.setNumThreads(threads)


def environment_lines(threads):
    """What the numbers depend on: BLAS library, its kernel and threads, versions."""
    import cv2
    import numpy
    lines = [(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, "
              f"opencv {cv2.__version__}, {os.cpu_count()} cores, threads {threads} "
              f"(cv2.getNumThreads() = {cv2.getNumThreads()})")]
    lines.append(", ".join(f"{var}={os.environ.get(var, '(unset)')}"
                           for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                       "OPENBLAS_THREAD_TIMEOUT")))
    from pycaffe_lite import parallel
    lines.append(f"pycaffe_lite threads (update, elementwise): {parallel.num_threads()}")
    try:
        import threadpoolctl
        for pool in threadpoolctl.threadpool_info():
            owner = os.path.basename(os.path.dirname(pool["filepath"]))  # numpy.libs, ...
            lines.append(f"{pool['user_api']} in {owner}: {pool['internal_api']} "
                         f"{pool.get('version')}, kernel {pool.get('architecture', '?')}, "
                         f"{pool['num_threads']} threads")
    except ImportError:
        lines.append("threadpoolctl not installed: BLAS kernel unknown "
                     "(pip install threadpoolctl to see it)")
    return lines


def best_time(fn, repeat, warmup=1):
    """Best wall time of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    return best_times([fn], repeat, warmup)[0]


def best_times(fns, repeat, warmup=1):
    """Best wall time of each of ``fns``, their runs interleaved.

    Interleaving (a, b, a, b, ...) exposes both sides to the same background
    load, so a ratio of the two stays fair on a busy machine.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def _cpu_counters():
    """(machine busy seconds from /proc/stat, this process's CPU seconds, wall time)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = None
    t = os.times()      # our own CPU time includes the children we waited for
    return busy, t.user + t.system + t.children_user + t.children_system, time.monotonic()


class BackgroundLoad:
    """How busy the rest of the machine was while the benchmark ran.

    Machine-wide busy time (``/proc/stat``) minus this process's own CPU time,
    in cores; the load average is no guide here (it counts idle tasks on
    some VMs).
    """

    def __init__(self):
        self.start = _cpu_counters()

    def cores(self):
        busy, mine, wall = _cpu_counters()
        if busy is None or self.start[0] is None:
            return None
        return max(0.0, (busy - self.start[0]) - (mine - self.start[1])) / max(
            wall - self.start[2], 1e-9)

    def line(self):
        cores = self.cores()
        if cores is None:
            return "background load unknown (no /proc/stat)"
        warn = "  << busy machine: timings unreliable" if cores > 0.1 else ""
        return f"other processes used {cores:.2f} of {os.cpu_count()} cores during the run{warn}"


# --- models -----------------------------------------------------------------------------

def need(path):
    if not Path(path).exists():
        sys.exit(f"{path} not found: the benchmarks need ../shared/fixtures "
                 "(set PYCAFFE_LITE_SHARED)")
    return str(path)


def load_net(prototxt, weights, input_shape):
    """Our net (TEST phase, NumPy) with its input reshaped to ``input_shape``."""
    import pycaffe_lite as caffe
    net = caffe.Net(need(prototxt), caffe.TEST, weights=need(weights))
    net.blobs[net.inputs[0]].reshape(*input_shape)
    net.reshape()
    return net


def random_weights(prototxt, directory, seed=0, synthetic=False):
    """Write a caffemodel of random params for ``prototxt`` into ``directory``
    (:func:`pycaffe_lite.testing.randomize`); OpenCV and we then load the very
    same file.  ``synthetic``: the net's data layers become synthetic data
    first (for nets whose LMDBs are elsewhere)."""
    import pycaffe_lite as caffe
    from pycaffe_lite.io import files
    from pycaffe_lite.io.synthetic import synthesize_data_layers
    from pycaffe_lite.testing import randomize
    param = files.read_net(need(prototxt))
    if synthetic:
        param = synthesize_data_layers(param, batch=1)
    net = randomize(caffe.Net(param, caffe.TEST), seed)
    path = os.path.join(directory, Path(prototxt).stem + "_random.caffemodel")
    net.save(path)
    return path


def temp_dir():
    return tempfile.TemporaryDirectory(prefix="pycaffe_lite_bench_")


def layer_flops(net):
    """[(layer name, type, FLOPs)] for Convolution, Deconvolution and InnerProduct
    (and HWGQ's BinaryConvolution / BinaryInnerProduct, float GEMMs like them).

    FLOPs = 2 * multiply-adds, biases not counted.  The weight blob's shape
    gives the multiply-adds per output (Convolution, InnerProduct) or per input
    (Deconvolution) element, whatever the number of spatial axes.
    """
    import numpy
    out = []
    for record in net.records:
        layer, bottoms, tops = record.layer, record.bottom_blobs, record.top_blobs
        kind = layer.type.replace("Binary", "")
        if kind not in ("Convolution", "Deconvolution", "InnerProduct") or not layer.blobs:
            continue
        weight = layer.blobs[0].shape
        if kind == "InnerProduct":
            per_output = weight[1] if len(weight) >= 2 else weight[0]
            macs = sum(t.count for t in tops) * per_output
        elif kind == "Convolution":
            macs = sum(t.count for t in tops) * int(numpy.prod(weight[1:]))
        else:
            macs = sum(b.count for b in bottoms) * int(numpy.prod(weight[1:]))
        out.append((record.name, layer.type, 2 * macs))
    return out


def opencv_names(net, blobs):
    """OpenCV's names for our blobs: the last layer writing each (in-place layers included)."""
    writer = {}
    for record in net.records:
        for top in record.tops:
            writer[top] = record.name
    return [writer[b] for b in blobs]


def opencv_net(prototxt, weights):
    import cv2
    return cv2.dnn.readNetFromCaffe(need(prototxt), need(weights))


def relative_error(value, reference):
    import numpy
    value = numpy.asarray(value, numpy.float64)
    reference = numpy.asarray(reference, numpy.float64).reshape(value.shape)
    return float(numpy.abs(value - reference).max() / max(numpy.abs(reference).max(), 1e-30))


def sgemm_peak(n, repeat):
    """Best GFLOP/s of a float32 ``n x n @ n x n`` product (2 n^3 FLOPs)."""
    import numpy
    rng = numpy.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=numpy.float32)
    b = rng.standard_normal((n, n), dtype=numpy.float32)
    c = numpy.empty((n, n), numpy.float32)
    seconds = best_time(lambda: numpy.matmul(a, b, out=c), repeat)
    return 2.0 * n ** 3 / seconds / 1e9, seconds


# --- output --------------------------------------------------------------------------------

def table(headers, rows):
    """A plain-text table, columns right-aligned after the first."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
