"""The Solver base: Caffe's ``solver.cpp``.

A solver builds the train net and the test nets a SolverParameter describes,
then runs iterations: clear the diffs, test when due, ``iter_size`` forward /
backward passes, log, :meth:`apply_update` (subclasses: lr policy, clipping,
normalisation, regularisation, update rule), snapshot when due.  Paths in the
solver (net files, snapshot_prefix) are taken from the current directory, as
Caffe takes them.
"""
import contextlib
import logging
import os
import re
import sys

import numpy

from .. import backend, rng
from ..errors import CaffeError, ParseError
from ..io import files
from ..layer import TEST, TRAIN
from ..log import caffe_float
from ..net import check_param_shapes
from ..proto import caffe_pb2
from ..registry import Registry

log = logging.getLogger("pycaffe_lite")

f32 = numpy.float32


class NetFileNotFoundError(ParseError):
    """A net file that the solver names does not exist."""


class SolverParamError(CaffeError):
    """A solver setting that cannot work.  ``field`` names the setting; the
    solver adds its file and the field's line (:meth:`Solver.named`)."""

    named = False       # True once the solver file is in the message

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


# Tokens of the text format, enough to find where a top-level field is set.
_TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|#[^\n]*|\n|[\w.]+|\S')


def named_error(error, path):
    """The :class:`SolverParamError` ``error`` with the solver file ``path`` (and the
    line of its field when the file sets it) in front; as it is without a path."""
    if not path or error.named:
        return error
    named = SolverParamError(f"{field_location(path, error.field)}: {error}", error.field)
    named.named = True
    return named


def field_location(path, field):
    """``path:line`` of the solver file ``path`` where top-level ``field`` is set, or
    ``path`` when it is not set there (or ``field`` is None)."""
    line = field and field_line(_text_of(path), field)
    return f"{path}:{line}" if line else path


def field_line(text, field):
    """The line (1-based) of prototxt ``text`` where top-level ``field`` is first
    set, or None."""
    line, depth, previous, previous_line = 1, 0, None, None
    for token in _TOKEN.findall(text):
        if token == "\n":
            line += 1
            continue
        if token[0] == "#":
            continue
        if depth == 0 and previous == field and token in (":", "{", "<"):
            return previous_line
        if token in ("{", "<"):
            depth += 1
        elif token in ("}", ">"):
            depth -= 1
        previous, previous_line = token, line
    return None


class SolverAction:
    """What an ``action_request`` function asks for (Caffe's SolverAction::Enum)."""
    NONE = 0
    STOP = 1
    SNAPSHOT = 2


SOLVERS = Registry("solver", SolverParamError)
register_solver = SOLVERS.register      # @register_solver("SGD"): the solver for type "SGD"
solver_type_list = SOLVERS.type_list
solver_class = SOLVERS.lookup


def read_solver(path_or_param):
    """``(SolverParameter, path or None)`` from a file name or a SolverParameter."""
    if isinstance(path_or_param, (str, os.PathLike)):
        path = os.fspath(path_or_param)
        return files.read_solver(path), path
    if isinstance(path_or_param, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(path_or_param)
        from ..io.upgrade import upgrade_solver
        return files.check_path_fields(upgrade_solver(param), "SolverParameter"), None
    raise CaffeError(f"a solver is made from a solver prototxt path or a SolverParameter, "
                     f"got {type(path_or_param).__name__}")


def create_solver(path_or_param, **kwargs):
    """The solver that the parameter's ``type`` names (Caffe's SolverRegistry)."""
    param, path = read_solver(path_or_param)
    if path is not None:
        kwargs.setdefault("path", path)
    try:
        cls = solver_class(param.type)
    except SolverParamError as e:
        e.field = "type"
        raise named_error(e, path) from None
    return cls(param, **kwargs)


def get_solver(path_or_param, **kwargs):
    """pycaffe's ``caffe.get_solver``: the solver of the file's ``type``."""
    return create_solver(path_or_param, **kwargs)


# --- where the nets live -----------------------------------------------------------

def choose_array_module(param):
    """NumPy or CuPy for a solver created from Python without ``xp``: pycaffe's mode
    (``set_mode_cpu`` / ``set_mode_gpu``), as in Caffe's Python interface; the
    prototxt's ``solver_mode`` is read by ``caffe_lite train`` only."""
    del param
    from .. import pycaffe
    return pycaffe.array_module()


def default_net_factory(net_param, phase, xp):
    """A pycaffe Net (``caffe.Net`` methods: forward(**inputs), blobs, params, ...)
    allocated on ``xp``; level and stages come from ``net_param.state``."""
    from ..pycaffe import Net
    return Net(net_param, phase, xp=xp)


def share_trained_layers(target, source):
    """Make ``target``'s params use ``source``'s arrays (Caffe's ShareTrainedLayersWith)."""
    targets = target.layer_dict
    for record in source.records:
        name, layer, other = record.name, record.layer, targets.get(record.name)
        if other is None:
            continue
        check_param_shapes(
            [blob.shape for blob in layer.blobs], other.blobs,
            lambda: CaffeError(f"cannot share the params of layer '{name}': "
                               f"{len(layer.blobs)} blobs in the train net, "
                               f"{len(other.blobs)} in the test net"),
            lambda j, shape, blob: CaffeError(
                f"Cannot share param {j} weights from layer '{name}'; shape mismatch.  "
                f"Source param shape is {shape}; target param shape is {blob.shape}"))
        for mine, theirs in zip(other.blobs, layer.blobs):
            mine.share_data(theirs)


def _mean_abs(array):
    return caffe_float(float(abs(array).sum()) / max(array.size, 1))


class Solver:
    """Trains ``net`` with the update rule of a subclass (see :mod:`.sgd_solvers`).

    ``param_or_path``: a solver prototxt path or a SolverParameter.  Keyword
    arguments are listed in :mod:`pycaffe_lite.solvers`.
    """

    type = None

    def __init__(self, param_or_path, xp=None, action_request=None, progress=None,
                 net_factory=None, path=None):
        param, read_from = read_solver(param_or_path)
        self.path = read_from or path
        self.param = param
        self.action_request = action_request
        self.progress = progress
        self.net_factory = net_factory or default_net_factory
        self.callbacks = []
        self.requested_early_exit = False
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = f32(0)
        self._losses = []
        log.info("Initializing solver from parameters: \n%s", param)
        with self.naming_errors():
            self._check_param()
            self._set_snapshot_prefix()
            self._check_snapshot_write_permissions()
        if param.random_seed >= 0:
            rng.set_random_seed(param.random_seed)
        self.xp = xp if xp is not None else choose_array_module(param)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        self._load_weights()
        log.info("Solver scaffolding done.")
        with self.naming_errors():
            self.pre_solve()

    # --- Init ----------------------------------------------------------------------
    def named(self, error):
        """``error`` (a :class:`SolverParamError`) with the solver file, and the line
        of its field when the file sets it, in front."""
        return named_error(error, self.path)

    @contextlib.contextmanager
    def naming_errors(self):
        """A context in which a :class:`SolverParamError` is raised :meth:`named`."""
        try:
            yield
        except SolverParamError as e:
            raise self.named(e) from None

    def _check_param(self):
        p = self.param
        if p.average_loss < 1:
            raise SolverParamError(f"average_loss must be at least 1, got {p.average_loss}",
                                   "average_loss")
        if p.iter_size < 1:
            raise SolverParamError(f"iter_size must be at least 1, got {p.iter_size}",
                                   "iter_size")
        if p.snapshot_format != caffe_pb2.SolverParameter.BINARYPROTO:
            raise SolverParamError("snapshot_format HDF5 is not supported; use BINARYPROTO "
                                   "(the default)", "snapshot_format")
        for field in ("display", "test_interval", "snapshot", "max_iter"):
            if getattr(p, field) < 0:
                raise SolverParamError(f"{field} must not be negative, got "
                                       f"{getattr(p, field)}", field)
        # The test nets (checked before any net is built, as errors go).
        generic = p.HasField("net") + p.HasField("net_param")
        if generic > 1:
            raise SolverParamError("Both net_param and net_file may not be specified.",
                                   "net_param")
        specific = len(p.test_net_param) + len(p.test_net)
        if (generic and len(p.test_iter) < specific) or (
                not generic and len(p.test_iter) != specific):
            raise SolverParamError(f"test_iter must be specified for each test network: "
                                   f"{specific} test nets, {len(p.test_iter)} test_iter",
                                   "test_iter")
        count = len(p.test_iter)
        if len(p.test_state) and len(p.test_state) != count:
            raise SolverParamError(f"test_state must be unspecified or specified once per "
                                   f"test net: {count} test nets, {len(p.test_state)} "
                                   "test_state", "test_state")
        if count and p.test_interval <= 0:
            raise SolverParamError(f"{count} test net(s) need test_interval > 0, got "
                                   f"{p.test_interval}", "test_interval"
                                   if p.HasField("test_interval") else "test_iter")

    def _set_snapshot_prefix(self):
        """Caffe's UpgradeSnapshotPrefixProperty: no prefix = the solver file's name
        without extension; a directory = that directory / the solver file's stem."""
        if not self.path:
            return
        p = self.param
        stem = os.path.splitext(self.path)[0]
        if not p.HasField("snapshot_prefix"):
            p.snapshot_prefix = stem
            log.info("snapshot_prefix was not specified and is set to %s", p.snapshot_prefix)
        elif os.path.isdir(p.snapshot_prefix):
            p.snapshot_prefix = os.path.join(p.snapshot_prefix, os.path.basename(stem))
            log.info("snapshot_prefix is a directory and is set to %s", p.snapshot_prefix)

    def _check_snapshot_write_permissions(self):
        p = self.param
        if not p.snapshot:
            return
        probe = self.snapshot_filename(".tempfile")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise SolverParamError(f"Cannot write to snapshot prefix '{p.snapshot_prefix}' "
                                   f"({e.strerror}). Make sure that the directory exists and "
                                   "is writeable.", "snapshot_prefix") from None

    def _read_net_file(self, path, field):
        """The net a solver field names; a file that is missing (or not a file) is
        named with the solver that named it and the directory it was looked for in.

        Caffe opens the path from the current directory, not from the solver's
        folder: a solver run from elsewhere is the usual reason, so say so.
        """
        if not path:
            raise self.named(SolverParamError(
                f"'{field}' is empty: give the path of a net prototxt", field))
        if os.path.exists(path):
            try:
                files.regular_file(path, "net")
            except ParseError as e:
                raise ParseError(f"{e} (named by '{field}' in "
                                 f"{self._solver_location(field)})") from None
            return files.read_net(path)
        solver = self._solver_location(field)
        message = (f"{path}: net file not found (named by '{field}' in {solver}; relative "
                   f"paths are opened from the current directory {os.getcwd()}, as in Caffe)")
        beside = os.path.join(os.path.dirname(self.path or ""), path)
        if self.path and not os.path.isabs(path) and os.path.exists(beside):
            message += (f"; it is next to the solver: run from "
                        f"{os.path.dirname(os.path.abspath(self.path))}")
        raise NetFileNotFoundError(message)

    def _solver_location(self, field):
        """Where ``field`` is set, for a message: the solver file (and line), or "the
        SolverParameter" for a solver made from a message.  Reads the solver file:
        for errors only."""
        return field_location(self.path, field) if self.path else "the SolverParameter"

    def _build_net(self, net_param, phase):
        return self.net_factory(net_param, phase, self.xp)

    def _init_train_net(self):
        p = self.param
        given = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if not given:
            raise self.named(SolverParamError(
                "SolverParameter must specify a train net using one of these fields: net, "
                "net_param, train_net, train_net_param"))
        if len(given) > 1:
            raise self.named(SolverParamError(
                "SolverParameter must not contain more than one of these fields specifying "
                "a train_net: net, net_param, train_net, train_net_param (got "
                f"{', '.join(given)})", given[1]))
        field = given[0]
        if field == "train_net_param":
            log.info("Creating training net specified in train_net_param.")
            net_param = _copy(p.train_net_param)
        elif field == "train_net":
            log.info("Creating training net from train_net file: %s", p.train_net)
            net_param = self._read_net_file(p.train_net, "train_net")
        elif field == "net_param":
            log.info("Creating training net specified in net_param.")
            net_param = _copy(p.net_param)
        else:
            log.info("Creating training net from net file: %s", p.net)
            net_param = self._read_net_file(p.net, "net")
        # Solver defaults, then the net's own state, then train_state (highest).
        state = caffe_pb2.NetState(phase=TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        net = self._build_net(net_param, TRAIN)
        return net

    def _init_test_nets(self):
        p = self.param
        sources, params = [], []
        for net_param in p.test_net_param:
            sources.append("test_net_param")
            params.append(_copy(net_param))
        for path in p.test_net:
            sources.append("test_net file: " + path)
            params.append(self._read_net_file(path, "test_net"))
        remaining = len(p.test_iter) - len(params)
        if p.HasField("net_param"):
            sources += ["net_param"] * remaining
            params += [_copy(p.net_param) for _ in range(remaining)]
        if p.HasField("net"):
            sources += ["net file: " + p.net] * remaining
            params += [self._read_net_file(p.net, "net") for _ in range(remaining)]
        nets = []
        for i, (source, net_param) in enumerate(zip(sources, params)):
            state = caffe_pb2.NetState(phase=TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            log.info("Creating test net (#%d) specified by %s", i, source)
            net = self._build_net(net_param, TEST)
            nets.append(net)
        return nets

    def _load_weights(self):
        """The solver's ``weights`` field (newer Caffe): comma-separated caffemodels
        copied into the train net and every test net."""
        for entry in self.param.weights:
            for path in (part.strip() for part in entry.split(",")):
                if path:
                    log.info("Finetuning from %s", path)
                    for net in [self.net] + self.test_nets:
                        net.copy_from(path)

    def pre_solve(self):
        """Subclasses allocate their history here."""

    # --- training ------------------------------------------------------------------
    def add_callback(self, on_start=None, on_gradients_ready=None):
        """Call ``on_start()`` before each iteration's passes and
        ``on_gradients_ready()`` before its update (pycaffe's add_callback)."""
        self.callbacks.append((on_start, on_gradients_ready))

    def requested_action(self):
        if self.action_request is None:
            return SolverAction.NONE
        return self.action_request()

    def _show_progress(self, iters):
        if self.progress is not None:
            return bool(self.progress) and iters > 1
        stream = sys.stderr
        return iters > 1 and hasattr(stream, "isatty") and stream.isatty()

    def step(self, iters):
        """Run ``iters`` iterations (Caffe's Solver::Step)."""
        iters = int(iters)
        start_iter = self.iter
        stop_iter = self.iter + iters
        p = self.param
        self._losses = []
        self.smoothed_loss = f32(0)
        self.requested_early_exit = False
        bar = None
        if self._show_progress(iters):
            from tqdm import tqdm
            bar = tqdm(total=iters, desc="train", unit="iter", file=sys.stderr,
                       leave=False, dynamic_ncols=True)
        try:
            while self.iter < stop_iter:
                self.net.clear_param_diffs()
                if (p.test_interval and self.iter % p.test_interval == 0
                        and (self.iter > 0 or p.test_initialization)):
                    self.test_all()
                    if self.requested_early_exit:
                        break
                for on_start, _ in self.callbacks:
                    if on_start:
                        on_start()
                display = bool(p.display) and self.iter % p.display == 0
                loss = f32(0)
                for _ in range(p.iter_size):
                    loss += f32(self._forward_backward(self.net, display and p.debug_info))
                loss /= f32(p.iter_size)
                self._update_smoothed_loss(loss, start_iter)
                if display:
                    log.info("Iteration %d, loss = %s", self.iter, caffe_float(self.smoothed_loss))
                    self._log_outputs(self.net, "Train")
                for _, on_gradients_ready in self.callbacks:
                    if on_gradients_ready:
                        on_gradients_ready()
                self.apply_update()
                if display and p.debug_info:
                    self._update_debug_info()
                # iter counts the updates done.
                self.iter += 1
                if bar is not None:
                    bar.set_postfix(loss=caffe_float(self.smoothed_loss), refresh=False)
                    bar.update()
                request = self.requested_action()
                if ((p.snapshot and self.iter % p.snapshot == 0)
                        or request == SolverAction.SNAPSHOT):
                    self.snapshot()
                if request == SolverAction.STOP:
                    self.requested_early_exit = True
                    break
        finally:
            if bar is not None:
                bar.close()

    def solve(self, resume_file=None):
        """Train to ``max_iter`` (Caffe's Solver::Solve)."""
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        # One more forward pass to show the loss of the final weights (no update).
        if p.display and self.iter % p.display == 0:
            loss = f32(self._forward(self.net, False))
            self._update_smoothed_loss(loss, start_iter)
            log.info("Iteration %d, loss = %s", self.iter, caffe_float(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss, start_iter):
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = f32((self.smoothed_loss * f32(size - 1) + loss) / f32(size))
        else:
            idx = (self.iter - start_iter) % average
            self.smoothed_loss = f32(self.smoothed_loss
                                     + (loss - self._losses[idx]) / f32(average))
            self._losses[idx] = loss

    def _log_outputs(self, net, kind, values=None):
        """Caffe's "    Train/Test net output #k: name = v (* w = x loss)" lines."""
        weights = net.blob_loss_weights
        index = 0
        for name in net.output_names:
            weight = f32(weights.get(name, 0.0))
            scores = values[name] if values is not None else backend.to_numpy(
                net.blobs[name].data).astype(f32).ravel()
            for score in scores:
                suffix = ""
                if weight:
                    suffix = f" (* {caffe_float(weight)} = {caffe_float(weight * score)} loss)"
                log.info("    %s net output #%d: %s = %s%s", kind, index, name,
                         caffe_float(score), suffix)
                index += 1

    # --- forward / backward (with Caffe's debug_info lines) --------------------------
    def _forward(self, net, debug):
        if not debug:
            return net.forward_range()
        loss = 0.0
        for i, record in enumerate(net.records):
            loss += net.forward_range(i, i)
            for name, blob in zip(record.tops, record.top_blobs):
                log.info("    [Forward] Layer %s, top blob %s data: %s", record.name,
                         name, _mean_abs(blob.data))
            for k, blob in enumerate(record.layer.blobs):
                log.info("    [Forward] Layer %s, param blob %s data: %s",
                         record.name, self._param_display_name(record, k),
                         _mean_abs(blob.data))
        return loss

    def _forward_backward(self, net, debug):
        if not debug:
            return net.forward_backward()
        loss = self._forward(net, True)
        for i in reversed(range(len(net.records))):
            record = net.records[i]
            if not record.need_backward:
                continue
            net.backward_range(i, i)
            for name, blob, need in zip(record.bottoms, record.bottom_blobs,
                                        record.bottom_need_backward):
                if need:
                    log.info("    [Backward] Layer %s, bottom blob %s diff: %s",
                             record.name, name, _mean_abs(blob.diff))
            for k, blob in enumerate(record.layer.blobs):
                if record.layer.needs_param_gradient(k):
                    log.info("    [Backward] Layer %s, param blob %d diff: %s",
                             record.name, k, _mean_abs(blob.diff))
        return loss

    @staticmethod
    def _param_display_name(record, k):
        specs = record.layer.param.param
        return specs[k].name if k < len(specs) and specs[k].name else str(k)

    def _update_debug_info(self):
        for record in self.net.records:
            for k, blob in enumerate(record.layer.blobs):
                log.info("    [Update] Layer %s, param %s data: %s; diff: %s",
                         record.name, self._param_display_name(record, k),
                         _mean_abs(blob.data), _mean_abs(blob.diff))

    # --- testing ---------------------------------------------------------------------
    def test_all(self):
        """Run every test net; returns their :meth:`test` results."""
        results = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(i))
        return results

    def test(self, test_net_id=0):
        """Mean of each output over ``test_iter`` batches, logged as Caffe logs it.

        Returns ``{output name: float32 array of means}`` (None when a STOP
        request interrupted the test).
        """
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        share_trained_layers(net, self.net)
        sums = None
        loss = f32(0)
        iterations = p.test_iter[test_net_id]
        for _ in range(iterations):
            request = self.requested_action()
            while request != SolverAction.NONE:
                if request == SolverAction.SNAPSHOT:
                    self.snapshot()
                elif request == SolverAction.STOP:
                    self.requested_early_exit = True
                request = self.requested_action()
            if self.requested_early_exit:
                break
            iter_loss = f32(self._forward(net, p.debug_info))
            if p.test_compute_loss:
                loss += iter_loss
            scores = {name: backend.to_numpy(net.blobs[name].data).astype(f32).ravel()
                      for name in net.output_names}
            if sums is None:
                sums = {name: values.copy() for name, values in scores.items()}
            else:
                for name, values in scores.items():
                    sums[name] += values
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return None
        if p.test_compute_loss:
            loss /= f32(iterations)
            log.info("Test loss: %s", caffe_float(loss))
        sums = sums or {name: numpy.zeros(0, f32) for name in net.output_names}
        means = {name: (values / f32(iterations)).astype(f32) for name, values in sums.items()}
        self._log_outputs(net, "Test", means)
        return means

    # --- update ------------------------------------------------------------------------
    def apply_update(self):
        raise NotImplementedError(f"{type(self).__name__}.apply_update")

    # --- snapshots -------------------------------------------------------------------
    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (atomically),
        first removing the temporaries of this prefix that a killed run left
        (:func:`pycaffe_lite.io.files.remove_stale_temporaries`)."""
        files.remove_stale_temporaries(self.param.snapshot_prefix)
        model_filename = self.snapshot_filename(".caffemodel")
        log.info("Snapshotting to binary proto file %s", model_filename)
        try:
            self.net.save(model_filename, write_diff=self.param.snapshot_diff)
            self.snapshot_solver_state(model_filename)
        except files.WriteError as e:
            if self.path:
                e.args = (f"{e} (snapshot_prefix of "
                          f"{field_location(self.path, 'snapshot_prefix')})",)
            raise
        return model_filename

    def snapshot_solver_state(self, model_filename):
        raise NotImplementedError(f"{type(self).__name__}.snapshot_solver_state")

    def restore(self, state_file):
        """Resume from a ``.solverstate`` (Caffe's Solver::Restore)."""
        state_file = os.fspath(state_file)
        if state_file.endswith(".h5"):
            raise CaffeError(f"{state_file}: HDF5 solver states are not supported; use a "
                             "binary .solverstate")
        state = files.read_binary_proto(state_file, caffe_pb2.SolverState(), "solverstate")
        self.restore_solver_state(state, state_file)

    def restore_solver_state(self, state, state_file):
        raise NotImplementedError(f"{type(self).__name__}.restore_solver_state")

    def share_weights(self, net):
        """Make ``net`` use this solver's trained params (pycaffe's ``share_weights``)."""
        share_trained_layers(net, self.net)

    def close(self):
        """Stop the nets' background work (data prefetch threads)."""
        for net in [self.net] + self.test_nets:
            net.close()


def _text_of(path):
    try:
        return files.read_regular(path, "solver").decode("utf-8", "replace")
    except CaffeError:
        return ""


def _copy(msg):
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def resolve_learned_net(learned_net, state_file):
    """Caffe opens ``learned_net`` from the current directory; when it is not there,
    look next to the solverstate (a snapshot moved together with its state)."""
    if os.path.exists(learned_net) or os.path.isabs(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_file)),
                          os.path.basename(learned_net))
    return beside if os.path.exists(beside) else learned_net

