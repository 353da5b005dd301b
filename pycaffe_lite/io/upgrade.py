"""In-memory upgrade of old Caffe files to the current (V2) format.

For now: the top-level ``input:`` / ``input_shape`` / ``input_dim`` form becomes
an Input layer, as Caffe's ``UpgradeNetInput`` does.  V0/V1 layer formats are
reported clearly.
"""
import logging

from ..errors import ParseError
from ..proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")


def upgrade_net(net, path="<net>"):
    if len(net.layers):
        raise ParseError(f"{path}: uses the V1 'layers {{ }}' format, which this version "
                         "cannot upgrade yet")
    if net.input:
        _upgrade_input(net, path)
    return net


def _upgrade_input(net, path):
    """Turn ``input: "data" input_shape {...}`` / ``input_dim`` into an Input layer."""
    names = list(net.input)
    shapes = []
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise ParseError(f"{path}: {len(names)} 'input' names but "
                             f"{len(net.input_shape)} 'input_shape' entries")
        shapes = [list(s.dim) for s in net.input_shape]
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(names):
            raise ParseError(f"{path}: 'input_dim' needs 4 values per input ({len(names)} "
                             f"inputs), got {len(net.input_dim)}")
        dims = list(net.input_dim)
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    else:
        raise ParseError(f"{path}: 'input' given without 'input_shape' or 'input_dim'")
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(names)
    for shape in shapes:
        layer.input_param.shape.add().dim.extend(shape)
    layers = [layer] + list(net.layer)
    del net.layer[:]
    net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_solver(solver, path="<solver>"):
    if solver.HasField("solver_type"):
        names = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta",
                 5: "Adam"}
        if solver.HasField("type") and solver.type != names[solver.solver_type]:
            raise ParseError(f"{path}: both 'type: {solver.type}' and the deprecated "
                             f"'solver_type' are given and disagree")
        solver.type = names[solver.solver_type]
        solver.ClearField("solver_type")
        log.warning("%s: upgraded the deprecated 'solver_type' field to 'type: %s'",
                    path, solver.type)
    return solver
