"""``caffe_lite <command> [flags]``: Caffe's command line brew (``tools/caffe.cpp``).

Commands, flags and log lines follow Caffe's ``caffe`` tool so that scripts
written for it keep working:

* ``test``: score a model (``--model``, ``--weights``, ``--iterations``).
* ``time``: benchmark every layer's forward and backward pass.
* ``device_query``: show the properties of the GPU(s) named by ``--gpu``.
* ``train``: train or finetune with a solver (``--solver``, ``--weights`` or
  ``--snapshot``, ``--sigint_effect``, ``--sighup_effect``).
* ``upgrade {net_text,net_binary,solver_text} IN OUT``: Caffe's
  ``upgrade_net_proto_text`` / ``_binary`` / ``upgrade_solver_proto_text``.
* ``compress labelfree``: the Label-free paper's pipeline (``--model``,
  ``--weights``, ``--out``, ``--calib``, ``--images``, ``--weight_bits``,
  ``--act_bits``, ...; see :mod:`pycaffe_lite.compress.pipeline`).
* ``compress qcnn``, ``import qcnn``, ``speedtest``: Q-CNN's product
  quantisation, its own model files, and its speed-test (see
  :mod:`pycaffe_lite.compress.qcnn`, :mod:`pycaffe_lite.tools.import_qcnn`,
  :mod:`pycaffe_lite.tools.speedtest`).
* ``binarize``: a HWGQ net's BinaryConvolution / BinaryInnerProduct layers as
  standard Convolution / InnerProduct with the ``sign(W) * alpha`` weights
  (``--model``, ``--weights``, ``--out_model``, ``--out_weights``; an extension,
  see :mod:`pycaffe_lite.tools.binarize`).

Flags are gflags-style (:mod:`pycaffe_lite.flags`): ``-model=x``, ``--model=x``
and ``--model x`` are the same; booleans take ``--flag``, ``--noflag`` or
``--flag=false``; ``--batch-size`` is ``--batch_size``.  Flags may come before
or after the command (``--help`` says so too).  Every user error (a
:class:`~pycaffe_lite.errors.CaffeError`, a bad flag) ends the run with one line
``caffe_lite: error: <message>`` and exit status 1; so does running out of
memory, an OS error (naming the file) or a Python layer's own code failing
(naming the layer and the file and line).  Any other exception is a bug: one
line ``caffe_lite: error: internal error, a bug in pycaffe_lite: ...`` naming
the exception, where in our code, and where to report it, exit status 1.  The traceback
comes with ``--debug``, ``-v 1`` (glog's verbosity), ``GLOG_v=1`` or
``PYCAFFE_LITE_DEBUG=1``.  An int32 flag (``--level``, ``--iterations``, ...)
out of int32 range is a usage error.

Untrusted nets: ``--no-python-layers`` refuses, when the net is built, every
Python layer (naming it and its module) instead of importing the module the
prototxt names, so such a net can be tested, timed or converted without
running its code; ``--strict`` makes NaN / inf in the weights an error.
"""
import collections
import contextlib
import logging
import sys
import time as _time

import numpy
from tqdm import tqdm

from . import backend, fuse
from .errors import CaffeError, ParseError, WeightsError
from .flags import (GLOG_FLAGS, SPELLING_NOTE, Flag, UsageError, check_int32,
                    describe_flags, parse_flags, report_error, run_reporting,
                    verbose_requested)
from .layer import TEST, TRAIN
from .log import caffe_float, setup_logging

PROG = "caffe_lite"
log = logging.getLogger("pycaffe_lite")


# --- flags (gflags semantics, see pycaffe_lite.flags) -------------------------------

FLAGS = [
    Flag("gpu", str, "", "Optional; run in GPU mode on given device IDs separated by ','. "
         "Use '-gpu all' to run on all available GPUs. Without a usable GPU the run "
         "continues on the CPU with a warning."),
    Flag("solver", str, "", "The solver definition protocol buffer text file."),
    Flag("model", str, "", "The model definition protocol buffer text file."),
    Flag("phase", str, "", "Optional; network phase (TRAIN or TEST). Used by 'time' "
         "(default TRAIN) and 'test' (default TEST)."),
    Flag("level", int, 0, "Optional; network level."),
    Flag("stage", str, "", "Optional; network stages (not to be confused with phase), "
         "separated by ','."),
    Flag("snapshot", str, "", "Optional; the snapshot solver state to resume training."),
    Flag("weights", str, "", "Optional; the pretrained weights to initialize finetuning, "
         "separated by ','. Cannot be set simultaneously with snapshot."),
    Flag("iterations", int, 50, "The number of iterations to run."),
    Flag("sigint_effect", str, "stop", "Optional; action to take when a SIGINT signal is "
         "received: snapshot, stop or none."),
    Flag("sighup_effect", str, "snapshot", "Optional; action to take when a SIGHUP signal "
         "is received: snapshot, stop or none."),
    Flag("synthetic_data", bool, False, "Optional; 'train', 'test' and 'time': replace "
         "data-source layers (Data, ImageData, HDF5Data, ...) by random data of the same "
         "batch size and image size (crop_size, or --synthetic_shape), for nets whose "
         "databases are not on this machine (pycaffe_lite extension)."),
    Flag("synthetic_shape", str, "3,224,224", "Optional; with --synthetic_data: C,H,W of "
         "the synthetic images where the prototxt does not tell them (no crop_size), e.g. "
         "1,28,28 for MNIST (pycaffe_lite extension)."),
    Flag("batch_size", int, 0, "Optional; 'train', 'test' and 'time': run at this batch "
         "size: the first dimension of every Input layer and, with --synthetic_data, of the "
         "synthetic data (pycaffe_lite extension; 0 keeps the prototxt's). 'compress': images "
         "per forward (0: as many as about 768 MB of activations hold, at most 64)."),
    Flag("fold_bn", bool, False, "Optional; 'test' and 'time': fold BatchNorm (and Scale) "
         "layers into the Convolution/InnerProduct before them (inference only: 'time' then "
         "skips backward and defaults to phase TEST; see pycaffe_lite.fuse; pycaffe_lite "
         "extension)."),
    Flag("out_model", str, "", "'binarize': where to write the binarised net definition "
         "(text prototxt; pycaffe_lite extension)."),
    Flag("out_weights", str, "", "'binarize': where to write the binarised weights (binary "
         "caffemodel; pycaffe_lite extension)."),
    Flag("out", str, "", "'compress': the folder for the stages' outputs (pycaffe_lite "
         "extension)."),
    Flag("calib", str, "", "'compress': the calibration images: an LMDB folder, an image list "
         "('path label' lines, as ImageData), or 'synthetic' (Gaussian images of the net's "
         "input shape); default: the net's TRAIN data layer. Labels are never read."),
    Flag("images", int, 1000, "'compress': calibration images (BatchNorm re-normalisation)."),
    Flag("act_images", int, 0, "'compress': the first N calibration images set the activation "
         "steps (0: min(400, --images), as the paper)."),
    Flag("weight_bits", int, 4, "'compress': power-of-two weight bits (2..6)."),
    Flag("first_last_bits", int, 8, "'compress': fixed-point bits of the first and last "
         "Convolution/InnerProduct (2..16)."),
    Flag("act_bits", int, 8, "'compress': activation bits (2..16; 8 gives the paper's Quant "
         "layers, codes 0..127)."),
    Flag("seed", int, 1, "'compress': random seed of the calibration crops and mirrors "
         "(qcnn: also of its k-means and sampled positions)."),
    Flag("test_iterations", int, 0, "'compress': TEST batches the report scores (0: every "
         "whole batch of the TEST source)."),
    Flag("restart", str, "", "'compress': redo the stages from this one on (labelfree: "
         "calibration, weights, renorm, activations, report; qcnn: calibration, a layer "
         "name, output)."),
    Flag("subspace_dim", int, 0, "'compress qcnn': values per subspace (0: Q-CNN's, 8 for "
         "convolutions, 4 for inner products)."),
    Flag("codebook", int, 0, "'compress qcnn': codewords per subspace (0: Q-CNN's, 128 for "
         "convolutions, 32 for inner products)."),
    Flag("layers", str, "", "'compress qcnn': the Convolution / InnerProduct layers to "
         "quantise, separated by ',' (default: all); NAME:D:K gives a layer its own "
         "subspace dim and codebook size (conv1:1:16)."),
    Flag("refine_iterations", int, 8, "'compress qcnn': sweeps of Q-CNN's error correction "
         "(codebooks, then assignments, fitted to each layer's responses on the calibration "
         "images); 0: k-means alone."),
    Flag("samples", int, 4096, "'compress qcnn': calibration columns per layer (for a "
         "convolution: random output positions spread over the images)."),
    Flag("dir", str, "", "'import qcnn': the folder of Q-CNN's .bin / .cbn files (its "
         "Bin.Files)."),
    Flag("prefix", str, "bvlc_alexnet_aCaF", "'import qcnn': the files' name prefix."),
    Flag("skip_missing", bool, False, "'import qcnn': build the net up to the last layer whose "
         "files are all there, instead of stopping at a missing file."),
    Flag("threads", int, 1, "'speedtest': CPU threads (BLAS and the lookup kernels)."),
    Flag("progress", bool, True, "Show a progress bar on stderr when it is a terminal "
         "(--noprogress turns it off)."),
    Flag("no_python_layers", bool, False, "Optional; every command that builds a net: refuse "
         "Python layers (naming the layer and its module) instead of importing the module "
         "the prototxt names, so an untrusted net can be tested or timed without running "
         "its code (pycaffe_lite extension; default: allowed, as Caffe)."),
    Flag("strict", bool, False, "Optional; 'train', 'test' and 'time': NaN or inf in the "
         "weights is an error instead of a warning (pycaffe_lite extension)."),
] + GLOG_FLAGS


class CommandNotImplemented(CaffeError):
    """A command this version registers but does not provide (exit status 2)."""

    exit_status = 2


# --- commands ------------------------------------------------------------------------

Command = collections.namedtuple("Command", "name run help arguments")
COMMANDS = collections.OrderedDict()


def command(name, help_text, arguments=()):
    """Register ``caffe_lite <name>``; the function takes the parsed flags, then
    one positional argument per name in ``arguments``."""
    def wrap(func):
        COMMANDS[name] = Command(name, func, help_text, tuple(arguments))
        return func
    return wrap


def usage(with_flags=True):
    lines = [f"{PROG}: command line brew", f"usage: {PROG} <command> <args>", "",
             "commands:"]
    lines += [f"  {c.name:<16}{c.help}" for c in COMMANDS.values()]
    text = "\n".join(lines) + "\n"
    if not with_flags:
        return text
    return f"{text}\n{describe_flags(FLAGS)}\n{SPELLING_NOTE}\n"


# --- shared pieces ---------------------------------------------------------------

def _phase(flags, default):
    if not flags.phase:
        return default
    phase = flags.phase.upper()
    if phase not in ("TRAIN", "TEST"):
        raise UsageError(f'--phase must be "TRAIN" or "TEST", got "{flags.phase}"',
                         show_usage=False)
    return TRAIN if phase == "TRAIN" else TEST


def _stages(flags):
    return [s for s in flags.stage.split(",") if s]


def _iterations(flags):
    if flags.iterations < 1:
        raise UsageError(f"--iterations must be at least 1, got {flags.iterations}",
                         show_usage=False)
    return flags.iterations


def _gpu_ids(flags):
    """Device IDs that --gpu names; ``None`` for 'all' (resolved once CuPy is known)."""
    if flags.gpu == "all":
        return None
    try:
        ids = [int(part) for part in flags.gpu.split(",")]
    except ValueError:
        raise UsageError(f"--gpu: '{flags.gpu}' is not a list of device IDs (use e.g. "
                         "'-gpu 0', '-gpu 0,1' or '-gpu all')", show_usage=False) from None
    for device in ids:
        check_int32(device, "--gpu: device ID")
    return ids


def _no_gpu_reason():
    if backend.cupy is None:
        return "CuPy is not installed (install pycaffe_lite[gpu])"
    return "CuPy sees no CUDA device"


def _device_count():
    return backend.cupy.cuda.runtime.getDeviceCount()


def _device_name(device_id):
    name = backend.cupy.cuda.runtime.getDeviceProperties(device_id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def select_device(flags):
    """``(xp, synchronize)`` for a single-device command, as Caffe picks it.

    Without --gpu: NumPy.  With --gpu but no usable GPU: one warning, NumPy.
    Several IDs: the first is used (as Caffe's single-GPU commands do).
    """
    if not flags.gpu:
        log.info("Use CPU.")
        return numpy, lambda: None
    ids = _gpu_ids(flags)
    if not backend.gpu_available():
        log.warning("--gpu=%s asked for, but there is no usable GPU: %s; running on the CPU",
                    flags.gpu, _no_gpu_reason())
        log.info("Use CPU.")
        return numpy, lambda: None
    count = _device_count()
    ids = list(range(count)) if ids is None else ids
    while len(ids) > 1:
        log.info("Not using GPU #%d for single-GPU function", ids.pop())
    device = ids[0]
    if not 0 <= device < count:
        raise CaffeError(f"--gpu: no GPU with device ID {device} ({count} found: IDs 0 to "
                         f"{count - 1})")
    log.info("Use GPU with device ID %d", device)
    log.info("GPU device name: %s", _device_name(device))
    cupy = backend.cupy
    cupy.cuda.Device(device).use()
    return cupy, cupy.cuda.get_current_stream().synchronize


def _progress(flags, total, desc):
    """A tqdm bar on stderr, drawn only on a terminal; log lines print around it."""
    stream = sys.stderr
    shown = flags.progress and hasattr(stream, "isatty") and stream.isatty()
    return tqdm(total=total, desc=desc, unit="iter", file=stream, disable=not shown,
                leave=False, dynamic_ncols=True)


def _synthetic_shape(flags):
    """(C, H, W) that --synthetic_shape gives."""
    try:
        shape = tuple(int(part) for part in flags.synthetic_shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"--synthetic_shape must be C,H,W (three positive integers, e.g. "
                         f"1,28,28), got '{flags.synthetic_shape}'", show_usage=False)
    return shape


def _check_batch_size(flags):
    if flags.batch_size < 0:
        raise UsageError(f"--batch_size must be positive, got {flags.batch_size}",
                         show_usage=False)


def _as_flags_say(model, flags):
    """``model`` (a NetParameter) with --synthetic_data and --batch_size applied."""
    from .io.synthetic import synthesize_data_layers
    batch = flags.batch_size
    if flags.synthetic_data:
        model = synthesize_data_layers(model, sample_shape=_synthetic_shape(flags),
                                       batch=batch or None)
    if batch:
        for layer in model.layer:
            for shape in layer.input_param.shape if layer.type == "Input" else ():
                if shape.dim:
                    shape.dim[0] = batch
    return model


def _build_net(flags, phase, xp):
    from .io import files
    from .net import Net
    _check_batch_size(flags)
    with _from_flag("model"):
        model = files.read_net(flags.model)
    model = _as_flags_say(model, flags)
    return Net(model, phase=phase, level=flags.level, stages=_stages(flags), xp=xp)


def _train_net_factory(flags):
    """The solver's net factory for 'train': its nets as --synthetic_data and
    --batch_size say (None: the solver's own, when neither is given)."""
    from .net import Net
    if not (flags.synthetic_data or flags.batch_size):
        return None
    _check_batch_size(flags)
    _synthetic_shape(flags)     # a bad value fails before any net is built

    def factory(net_param, phase, xp):
        return Net(_as_flags_say(net_param, flags), phase, xp=xp)
    return factory


def _copy_weights(net, weights):
    for path in (p for p in weights.split(",") if p):
        log.info("Loading weights from %s", path)
        with _from_flag("weights"):
            net.copy_from(path)


@contextlib.contextmanager
def _from_flag(flag):
    """An error about the file a flag names also names the flag (``--model=TEST``:
    "TEST: net file not found (--model)")."""
    try:
        yield
    except (ParseError, WeightsError) as e:
        if f"--{flag}" not in str(e) and len(e.args) == 1:
            e.args = (f"{e} (--{flag})",)
        raise


# --- train ---------------------------------------------------------------------------

def _train_device(flags, param):
    """``xp`` for training, chosen as Caffe's ``train()`` chooses (and logs) it.

    No --gpu: ``solver_mode: GPU`` means ``-gpu <device_id>``.  A GPU asked for
    but not usable: one warning, then the CPU.  Several GPUs: Caffe trains on
    all of them (P2PSync); we train on the first and say so.
    """
    requested, source = flags.gpu, "--gpu=" + flags.gpu
    if not requested and param.solver_mode == param.GPU:
        requested = str(param.device_id)
        source = f"solver_mode: GPU (device_id {param.device_id})"
    if not requested:
        log.info("Use CPU.")
        return numpy
    ids = _gpu_ids(flags._replace(gpu=requested))
    if not backend.gpu_available():
        log.warning("%s asks for a GPU, but there is no usable GPU: %s; training on the CPU",
                    source, _no_gpu_reason())
        log.info("Use CPU.")
        param.solver_mode = param.CPU
        return numpy
    count = _device_count()
    ids = list(range(count)) if ids is None else ids
    for device in ids:
        if not 0 <= device < count:
            raise CaffeError(f"{source}: no GPU with device ID {device} ({count} found: IDs 0 "
                             f"to {count - 1})")
    log.info("Using GPUs %s", ", ".join(str(i) for i in ids))
    for device in ids:
        log.info("GPU %d: %s", device, _device_name(device))
    if len(ids) > 1:
        log.warning("multi-GPU training is not supported; training on GPU %d only", ids[0])
    param.solver_mode = param.GPU
    param.device_id = ids[0]
    backend.cupy.cuda.Device(ids[0]).use()
    return backend.cupy


class _IterationClock:
    """Mean wall time of a training iteration (forward, backward, update), from the
    solver's callbacks; the intervals that include a test or a snapshot (due, or
    asked for by a signal) are left out."""

    def __init__(self, solver):
        self.solver = solver
        self.last = None
        self.total = 0.0
        self.count = 0
        self.requested = False
        solver.add_callback(on_start=self.on_start)

    def watch(self, action_request):
        """``action_request`` that also notes when a signal asked for something."""
        def request():
            action = action_request()
            if action:
                self.requested = True
            return action
        return request

    def on_start(self):
        now = _time.perf_counter()
        p, it = self.solver.param, self.solver.iter
        # Between the previous on_start and this one: that iteration, then (when due)
        # a snapshot and this iteration's test.
        busy = ((p.test_interval and it % p.test_interval == 0)
                or (p.snapshot and it % p.snapshot == 0))
        if self.last is not None and not busy and not self.requested:
            self.total += now - self.last
            self.count += 1
        self.last = now
        self.requested = False

    def report(self):
        if self.count:
            log.info("Average time per iteration: %s ms (forward, backward and update, "
                     "over %d iterations; tests and snapshots excluded)",
                     caffe_float(self.total / self.count * 1e3), self.count)


@command("train", "train or finetune a model")
def cmd_train(flags):
    """Caffe's ``train()``: build the solver, resume (--snapshot) or finetune
    (--weights), then ``Solve()`` with SIGINT / SIGHUP turned into solver requests.

    As in Caffe, --level and --stage go into the solver's ``train_state`` (the
    level replaces the solver's own), and the default SIGINT effect, ``stop``,
    ends training with the final snapshot that ``snapshot_after_train`` (default
    true) asks for: a complete ``.caffemodel`` + ``.solverstate`` pair that
    ``--snapshot`` resumes from.  (A solver with ``snapshot_after_train: false``
    stops without one, as Caffe's does: send SIGHUP first, ``snapshot``.)
    Extension: the mean time of a training iteration is logged at the end.
    """
    from . import solvers
    from .io import files
    if not flags.solver:
        raise UsageError("Need a solver definition to train (--solver).")
    if flags.snapshot and flags.weights:
        raise UsageError("Give a snapshot to resume training or weights to finetune but "
                         "not both (--snapshot and --weights).", show_usage=False)
    effects = [solvers.signals.effect(getattr(flags, name), name)
               for name in ("sigint_effect", "sighup_effect")]
    with _from_flag("solver"):
        param = files.read_solver(flags.solver)
    param.train_state.level = flags.level
    param.train_state.stage.extend(_stages(flags))
    xp = _train_device(flags, param)
    if flags.snapshot:
        del param.weights[:]
    elif flags.weights:
        del param.weights[:]
        param.weights.append(flags.weights)   # the solver copies them into every net
    with solvers.SignalHandler(*effects) as signals:
        solver = solvers.create_solver(param, path=flags.solver, xp=xp,
                                       action_request=signals.check,
                                       progress=None if flags.progress else False,
                                       net_factory=_train_net_factory(flags))
        try:
            if flags.snapshot:
                log.info("Resuming from %s", flags.snapshot)
                with _from_flag("snapshot"):
                    solver.restore(flags.snapshot)
            clock = _IterationClock(solver)
            solver.action_request = clock.watch(signals.check)
            log.info("Starting Optimization")
            solver.solve()
            clock.report()
        finally:
            solver.close()
    log.info("Optimization Done.")
    return 0


# --- test ------------------------------------------------------------------------------


@command("test", "score a model")
def cmd_test(flags):
    """Forward ``--iterations`` batches; log every output and their means."""
    if not flags.model:
        raise UsageError("Need a model definition to score (--model).")
    if not flags.weights:
        raise UsageError("Need model weights to score (--weights).")
    iterations = _iterations(flags)
    phase = _phase(flags, TEST)
    xp, _ = select_device(flags)
    net = _build_net(flags, phase, xp)
    _copy_weights(net, flags.weights)
    if flags.fold_bn:
        fuse.fold_batchnorm(net)
    log.info("Running for %d iterations.", iterations)
    names = net.output_names
    # Caffe sums in float; so do we, to print the same digits.
    scores = collections.OrderedDict()
    loss = numpy.float32(0)
    with _progress(flags, iterations, "test") as bar:
        for i in range(iterations):
            loss += numpy.float32(net.forward_range())
            for name in names:
                values = backend.to_numpy(net.blobs[name].data).astype(
                    numpy.float32).ravel()
                if i == 0:
                    scores[name] = values.copy()
                else:
                    scores[name] += values
                for score in values:
                    log.info("Batch %d, %s = %s", i, name, caffe_float(score))
            bar.update()
    loss /= numpy.float32(iterations)
    log.info("Loss: %s", caffe_float(loss))
    loss_weights = net.blob_loss_weights
    for name, total in scores.items():
        weight = numpy.float32(loss_weights.get(name, 0.0))
        for summed in total:
            mean = summed / numpy.float32(iterations)
            suffix = ""
            if weight:
                suffix = f" (* {caffe_float(weight)} = {caffe_float(weight * mean)} loss)"
            log.info("%s = %s%s", name, caffe_float(mean), suffix)
    return 0


# --- device_query ----------------------------------------------------------------

_DEVICE_FIELDS = [
    ("Major revision number", "major"),
    ("Minor revision number", "minor"),
    ("Name", "name"),
    ("Total global memory", "totalGlobalMem"),
    ("Total shared memory per block", "sharedMemPerBlock"),
    ("Total registers per block", "regsPerBlock"),
    ("Warp size", "warpSize"),
    ("Maximum memory pitch", "memPitch"),
    ("Maximum threads per block", "maxThreadsPerBlock"),
    ("Maximum dimension of block", "maxThreadsDim"),
    ("Maximum dimension of grid", "maxGridSize"),
    ("Clock rate", "clockRate"),
    ("Total constant memory", "totalConstMem"),
    ("Texture alignment", "textureAlignment"),
    ("Concurrent copy and execution", "deviceOverlap"),
    ("Number of multiprocessors", "multiProcessorCount"),
    ("Kernel execution timeout", "kernelExecTimeoutEnabled"),
]


def _show_property(value, key):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value)
    if key in ("deviceOverlap", "kernelExecTimeoutEnabled"):
        return "Yes" if value else "No"
    return str(value)


@command("device_query", "show GPU diagnostic information")
def cmd_device_query(flags):
    """Caffe's DeviceQuery for each device --gpu names (all devices by default)."""
    log.info("Querying GPUs %s", flags.gpu)
    ids = _gpu_ids(flags) if flags.gpu else None
    if not backend.gpu_available():
        raise CaffeError(f"device_query: no usable GPU: {_no_gpu_reason()}")
    count = _device_count()
    for device in (range(count) if ids is None else ids):
        if not 0 <= device < count:
            raise CaffeError(f"--gpu: no GPU with device ID {device} ({count} found)")
        props = backend.cupy.cuda.runtime.getDeviceProperties(device)
        log.info("Device id:                     %d", device)
        for label, key in _DEVICE_FIELDS:
            if key in props:
                log.info("%-31s%s", label + ":", _show_property(props[key], key))
    return 0


# --- time ------------------------------------------------------------------------------

def _run_backward(record):
    """A layer's backward as Caffe's ``time`` calls it, for every layer.

    A layer without a backward (data layers) may raise NotImplementedError; with
    nothing asked of it, that is what Caffe's empty Backward does.
    """
    try:
        record.layer.backward(record.top_blobs, record.bottom_need_backward, record.bottom_blobs)
    except NotImplementedError:
        if any(record.bottom_need_backward):
            raise


@command("time", "benchmark model execution time")
def cmd_time(flags):
    """Time each layer's forward and backward over ``--iterations`` passes."""
    if not flags.model:
        raise UsageError("Need a model definition to time (--model).")
    iterations = _iterations(flags)
    phase = _phase(flags, TEST if flags.fold_bn else TRAIN)
    xp, sync = select_device(flags)
    net = _build_net(flags, phase, xp)
    if flags.weights:
        _copy_weights(net, flags.weights)
    backward = not flags.fold_bn
    if flags.fold_bn:
        fuse.fold_batchnorm(net)
        log.info("--fold_bn: the folded net is inference-only; timing forward, backward "
                 "skipped")
    # A clean pass first, so that allocations are done before timing starts.
    log.info("Performing Forward")
    log.info("Initial loss: %s", caffe_float(net.forward_range()))
    if backward:
        log.info("Performing Backward")
        net.backward_range()
    sync()

    records = net.records
    forward_us = [0.0] * len(records)
    backward_us = [0.0] * len(records)
    forward_total = backward_total = 0.0
    clock = _time.perf_counter
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    bar = _progress(flags, iterations, "time")
    total_start = clock()
    with bar:
        for j in range(iterations):
            iter_start = clock()
            for i, record in enumerate(records):
                start = clock()
                record.layer.run_forward(record.bottom_blobs, record.top_blobs)
                sync()
                forward_us[i] += (clock() - start) * 1e6
            forward_total += (clock() - iter_start) * 1e6
            backward_start = clock()
            for i in reversed(range(len(records)) if backward else ()):
                start = clock()
                _run_backward(records[i])
                sync()
                backward_us[i] += (clock() - start) * 1e6
            backward_total += (clock() - backward_start) * 1e6
            log.info("Iteration: %d forward-backward time: %s ms.", j + 1,
                     caffe_float((clock() - iter_start) * 1e3))
            bar.update()
    log.info("Average time per layer: ")
    for i, name in enumerate(net.layer_names):
        log.info("%10s\tforward: %s ms.", name, caffe_float(forward_us[i] / 1000 / iterations))
        log.info("%10s\tbackward: %s ms.", name,
                 caffe_float(backward_us[i] / 1000 / iterations))
    total_ms = (clock() - total_start) * 1e3
    log.info("Average Forward pass: %s ms.", caffe_float(forward_total / 1000 / iterations))
    log.info("Average Backward pass: %s ms.", caffe_float(backward_total / 1000 / iterations))
    log.info("Average Forward-Backward: %s ms.", caffe_float(total_ms / iterations))
    log.info("Total Time: %s ms.", caffe_float(total_ms))
    log.info("*** Benchmark ends ***")
    return 0


# --- upgrade ---------------------------------------------------------------------------

UPGRADE_KINDS = ("net_text", "net_binary", "solver_text")


@command("upgrade", "write an old net or solver in the current format (upgrade "
         f"{'|'.join(UPGRADE_KINDS)} IN OUT)",
         arguments=("{" + ",".join(UPGRADE_KINDS) + "}", "IN", "OUT"))
def cmd_upgrade(flags, kind, source, target):
    """Caffe's upgrade_net_proto_text / _binary / upgrade_solver_proto_text.

    Status 1 when the upgrade met problems (the file is still written, as
    Caffe's tools write it).
    """
    from .tools import upgrade_proto
    if kind not in UPGRADE_KINDS:
        raise UsageError(f"upgrade: '{kind}' is not one of {', '.join(UPGRADE_KINDS)}")
    if kind == "solver_text":
        report = upgrade_proto.upgrade_solver_file(source, target)
    else:
        report = upgrade_proto.upgrade_net_file(source, target, binary=kind == "net_binary")
    return 1 if report.problems else 0


# --- binarize --------------------------------------------------------------------------

@command("binarize", "make a HWGQ net's binary layers standard ones holding sign(W)*alpha "
         "(a deploy_bw net)")
def cmd_binarize(flags):
    """Binarise ``--model`` + ``--weights`` into ``--out_model`` + ``--out_weights``.

    Every BinaryConvolution / BinaryInnerProduct becomes a Convolution /
    InnerProduct whose weight is the one the binary layer's forward uses (as the
    HWGQ paper's ``deploy_bw.prototxt`` nets); the rest is copied.  The net is
    built in --phase (default TEST), --level and --stage.  A net without a binary
    layer is an error and nothing is written.  See :mod:`pycaffe_lite.tools.binarize`.
    """
    from .tools.binarize import binarize_files
    needs = (("model", "a model definition to binarize"),
             ("weights", "the trained weights of the model"),
             ("out_model", "where to write the binarised model"),
             ("out_weights", "where to write the binarised weights"))
    for name, what in needs:
        if not getattr(flags, name):
            raise UsageError(f"Need {what} (--{name}).")
    binarize_files(flags.model, flags.weights, flags.out_model, flags.out_weights,
                   phase=_phase(flags, TEST), level=flags.level, stages=_stages(flags))
    return 0


# --- compress ----------------------------------------------------------------------

@command("compress", "compress a trained net: 'compress labelfree' (4-bit power-of-two "
         "weights, BatchNorm re-normalisation, 8-bit activations), 'compress qcnn' (Q-CNN's "
         "product quantisation)", arguments=("method",))
def cmd_compress(flags, method):
    """``caffe_lite compress labelfree --model NET --weights W --out DIR [...]``.

    See :mod:`pycaffe_lite.compress.pipeline`; every stage's files go to
    ``--out``, and a re-run keeps the stages whose inputs are unchanged.
    """
    from .compress import labelfree
    from .io import files
    if flags.out:
        files.check_path(flags.out, "--out", CaffeError)    # a NUL byte: no folder has it
    if method == "qcnn":
        from .compress.qcnn import qcnn_cli
        return qcnn_cli(flags)
    if method != "labelfree":
        raise UsageError(f"compress: unknown method '{method}' (methods: labelfree, qcnn)")
    needs = (("model", "the net to compress (a train_val or deploy prototxt)"),
             ("weights", "its trained full-precision weights"),
             ("out", "a folder for the outputs"))
    for name, what in needs:
        if not getattr(flags, name):
            raise UsageError(f"Need {what} (--{name}).")
    if flags.batch_size < 0:
        raise UsageError(f"--batch_size must be positive, got {flags.batch_size}",
                         show_usage=False)
    report = labelfree(flags.model, flags.weights, flags.out, restart=flags.restart or None,
                       progress=flags.progress and sys.stderr.isatty(),
                       calib=flags.calib or None, images=flags.images,
                       act_images=flags.act_images or None, weight_bits=flags.weight_bits,
                       fixed_bits=flags.first_last_bits, act_bits=flags.act_bits,
                       batch=flags.batch_size or None, seed=flags.seed,
                       test_iterations=flags.test_iterations or None)
    accuracy = report["accuracy"]
    for row in accuracy.get("rows", ()):
        for name, top_k in accuracy["tops"].items():
            log.info("%s: %s (top-%d) = %s", row["net"], name, top_k, caffe_float(row[name]))
    log.info("Wrote %s/train_val.prototxt, deploy.prototxt, quantized.caffemodel and "
             "report.md", flags.out)
    return 0


# --- Q-CNN: import, speedtest -------------------------------------------------------

@command("import", "read another tool's model files: 'import qcnn' (Q-CNN's Bin.Files to a "
         "deploy prototxt + caffemodel)", arguments=("format",))
def cmd_import(flags, fmt):
    """``caffe_lite import qcnn --dir Bin.Files --prefix P --out DIR [--skip_missing]``."""
    if fmt != "qcnn":
        raise UsageError(f"import: unknown format '{fmt}' (formats: qcnn)")
    from .tools.import_qcnn import import_cli
    return import_cli(flags)


@command("speedtest", "Q-CNN's speed-test: a Q net against its dense twin, per image, "
         "batch 1, single thread (--model, --weights, --iterations, --threads)")
def cmd_speedtest(flags):
    """``caffe_lite speedtest --model Q_DEPLOY --weights Q_MODEL [--iterations N]``."""
    from .tools.speedtest import speedtest_cli
    return speedtest_cli(flags)


# --- entry point ---------------------------------------------------------------------

def _fail(message, status=1, show_usage=False, debug=None):
    return report_error(PROG, message, usage(with_flags=False) if show_usage else None,
                        status, debug=debug)


@contextlib.contextmanager
def _strict_weights(flags):
    """--strict: NaN or inf in weights copied into a net is an error, not a warning."""
    if not flags.strict:
        yield
        return
    from .io import files
    previous = files.set_strict_weights(True)
    try:
        yield
    finally:
        files.set_strict_weights(previous)


def _run(command, flags, arguments):
    with _strict_weights(flags):
        return command.run(flags, *arguments)


def main(argv=None):
    """Run ``caffe_lite``; returns the exit status (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        positional, flags = parse_flags(argv, FLAGS)
    except UsageError as e:
        return _fail(e, show_usage=e.show_usage)
    if flags.help:
        sys.stdout.write(usage())
        return 0
    if flags.version:
        from . import __version__
        sys.stdout.write(f"{PROG} version {__version__}\n")
        return 0
    if not positional:
        return _fail("no command given", show_usage=True)
    name, arguments = positional[0], positional[1:]
    if name not in COMMANDS:
        return _fail(f"unknown command '{name}' (commands: {', '.join(COMMANDS)})",
                     show_usage=True)
    expected = COMMANDS[name].arguments
    if len(arguments) != len(expected):
        what = (f"'{name}' takes {' '.join(expected)}, got {len(arguments)} argument(s)"
                if expected else
                f"one command expected, got {len(positional)}: {' '.join(positional)}")
        return _fail(what, show_usage=True)
    setup_logging(verbose=verbose_requested(flags), min_level=flags.minloglevel)
    return run_reporting(PROG, lambda: _run(COMMANDS[name], flags, arguments), flags, _fail)


if __name__ == "__main__":
    sys.exit(main())
