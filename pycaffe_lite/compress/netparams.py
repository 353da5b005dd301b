"""NetParameter surgery for the compression pipelines: which blob feeds which
layer, the deploy form of a train_val net, caffemodel blobs by layer name."""
import collections

from ..io import files
from ..io.synthetic import SOURCE_TYPES
from ..layer import TEST
from ..net import filter_net
from ..proto import caffe_pb2

PARAM_TYPES = ("Convolution", "InnerProduct")


def phase_param(net_param, phase=TEST):
    """The layers of ``net_param`` active in ``phase`` (level 0, no stages)."""
    return filter_net(net_param, caffe_pb2.NetState(phase=phase))


def consumers(net_param):
    """``{(layer index, top index): [(layer index, bottom index), ...]}``.

    In-place layers make a new version of a blob: a bottom reads the version
    the latest earlier layer wrote, as Caffe wires it.
    """
    current, readers = {}, collections.defaultdict(list)
    for i, layer in enumerate(net_param.layer):
        for j, name in enumerate(layer.bottom):
            if name in current:
                readers[current[name]].append((i, j))
        for k, name in enumerate(layer.top):
            current[name] = (i, k)
            readers.setdefault((i, k), [])
    return readers


def source_layers(net_param):
    return [layer for layer in net_param.layer if layer.type in SOURCE_TYPES]


def deploy_param(net_param, input_shape, softmax=False):
    """The TEST net of ``net_param`` fed by an Input layer of ``input_shape``.

    Data-source layers become one Input (their first top); layers reading
    their other tops (labels), and layers reading those layers' tops, are
    left out.  ``softmax``: a SoftmaxWithLoss left out this way becomes a
    Softmax on its first bottom (top ``prob``), as BVLC's deploy files.
    """
    test = phase_param(net_param, TEST)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(test)
    del out.layer[:]
    gone = set()
    for layer in test.layer:
        if layer.type in SOURCE_TYPES or layer.type == "Input":
            if layer.type == "Input" and len(layer.top) == 1:
                entry = out.layer.add()
                entry.CopyFrom(layer)
                del entry.input_param.shape[:]
                entry.input_param.shape.add().dim.extend(int(d) for d in input_shape)
                continue
            entry = out.layer.add(name=layer.name, type="Input")
            entry.top.append(layer.top[0])
            entry.input_param.shape.add().dim.extend(int(d) for d in input_shape)
            gone.update(layer.top[1:])
            continue
        if any(name in gone for name in layer.bottom):
            gone.update(t for t in layer.top if t not in layer.bottom)
            if softmax and layer.type == "SoftmaxWithLoss" and layer.bottom[0] not in gone:
                out.layer.add(name="prob", type="Softmax", bottom=[layer.bottom[0]],
                              top=["prob"])
            continue
        out.layer.add().CopyFrom(layer)
    for layer in out.layer:
        del layer.include[:]
        del layer.exclude[:]
    return out


# --- caffemodel blobs by layer name ----------------------------------------------

def weight_blobs(weights):
    """``{layer name: [float32 arrays in their stored shapes]}`` of a caffemodel."""
    trained = files.read_weights(weights) if isinstance(weights, str) else weights
    return {lp.name: [files.blob_proto_to_array(b).reshape(files.blob_proto_shape(b))
                      for b in lp.blobs]
            for lp in trained.layer if lp.blobs}


def weights_message(net_param, blobs):
    """A caffemodel NetParameter: each layer of ``net_param`` (every phase)
    with ``blobs[name]``, in the net's order (layers without blobs kept bare)."""
    out = caffe_pb2.NetParameter(name=net_param.name)
    seen = set()
    for layer in net_param.layer:
        if layer.name in seen:
            continue
        seen.add(layer.name)
        entry = out.layer.add()
        entry.CopyFrom(layer)
        for array in blobs.get(layer.name, ()):
            files.array_to_blob_proto(array, proto=entry.blobs.add())
    return out
