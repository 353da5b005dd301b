"""pycaffe's NetSpec: write a net in Python, get its NetParameter (``caffe.net_spec``).

    from pycaffe_lite import layers as L, params as P, NetSpec

    n = NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.conv1, n.label)
    print(n.to_proto())

``L.<Type>(*bottoms, **params)`` is one layer of that type (any registered
type, ours included); it returns its top (``ntop=1``, the default), a tuple
of tops (``ntop=N``) or the layer itself (``ntop=0``).  Keyword arguments go
into the layer's own ``<type>_param`` message when it has a field of that name
(``kernel_size=5`` -> ``convolution_param.kernel_size``), else into the
LayerParameter (``loss_weight``, ``param=[dict(lr_mult=1)]``, ``include=
dict(phase=P.TRAIN)`` ...); a keyword ending in ``param`` names a message of
the LayerParameter outright (``convolution_param=dict(...)`` for a
Deconvolution).  Dicts fill nested messages, lists repeated fields, a scalar
given to a repeated field becomes a one-element list.  ``in_place=True``
writes the top over the bottom.  Tops named through a NetSpec attribute keep
that name (and name their layer); others get ``<Type><n>``.
``P.<Type>.<ENUM>`` is the enum value from ``<Type>Parameter``
(``P.Pooling.MAX``), ``P.TRAIN`` / ``P.TEST`` the phases.

The same behaviour as BVLC's ``python/caffe/net_spec.py``, written anew.
"""
import collections

from .proto import caffe_pb2

__all__ = ["NetSpec", "layers", "params", "to_proto", "assign_proto", "param_name_dict",
           "Top", "Function"]


def param_name_dict():
    """``{layer type: its param field's prefix}`` from the LayerParameter fields whose
    message is ``<Type>Parameter`` (``"Convolution": "convolution"``)."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return names


_PARAM_NAMES = param_name_dict()
# Types whose geometry lives in another type's message (Caffe's layers read it from
# there): a keyword their own message lacks goes there (BVLC's NetSpec would set it
# on the LayerParameter and fail).
_GEOMETRY = {"Deconvolution": "convolution", "Im2col": "convolution",
             "BinaryConvolution": "convolution", "QConvolution": "convolution",
             "BinActiv": "convolution", "BinaryInnerProduct": "inner_product",
             "QInnerProduct": "inner_product"}


def assign_proto(proto, name, value):
    """Set field ``name`` of message ``proto`` from a Python value (see the module doc)."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, (list, tuple)):
        value = [value]
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], dict):
            for item in value:
                message = field.add()
                for key, sub in item.items():
                    assign_proto(message, key, sub)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            assign_proto(field, key, sub)
    else:
        setattr(proto, name, value)


class Top:
    """One output blob of a :class:`Function` (its ``n``-th top)."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """The NetParameter of every layer this top depends on."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer under construction: its type, bottoms (Tops) and params."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, value in enumerate(inputs):
            if not isinstance(value, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is "
                                f"{type(value)})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for value in self.inputs:
            value._to_proto(layers, names, autonames)
            bottoms.append(layers[value.fn].top[value.n])
        layer = caffe_pb2.LayerParameter(type=self.type_name)
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._get_top_name(top, names, autonames) for top in self.tops)
        layer.name = self._get_name(names, autonames)
        messages = [_PARAM_NAMES.get(self.type_name), _GEOMETRY.get(self.type_name)]
        messages = [getattr(layer, m + "_param") for m in messages if m]
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value)
                continue
            target = next((m for m in messages if key in m.DESCRIPTOR.fields_by_name), layer)
            if target is layer and key not in layer.DESCRIPTOR.fields_by_name:
                where = " or ".join(m.DESCRIPTOR.name for m in messages) or "its own message"
                raise AttributeError(f"{self.type_name}: '{key}' is a field of neither "
                                     f"{where} nor LayerParameter")
            assign_proto(target, key, value)
        layers[self] = layer


def to_proto(*tops):
    """The NetParameter of every layer the ``tops`` depend on, in dependency order."""
    layers = collections.OrderedDict()
    autonames = collections.Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Tops by name: ``n.conv1 = L.Convolution(...)``; ``n.to_proto()`` names each
    top (and the layer that makes it) by its attribute."""

    def __init__(self):
        super().__setattr__("tops", collections.OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top '{name}'") from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def to_proto(self):
        names = {value: key for key, value in self.tops.items()}
        autonames = collections.Counter()
        layers = collections.OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``L.<Type>(*bottoms, **params)``: a layer of that type (see the module doc)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        layer_fn.__name__ = name
        return layer_fn


class Parameters:
    """``P.<Type>.<ENUM>``: enum values of ``<Type>Parameter`` (``P.Pooling.MAX``);
    ``P.TRAIN`` / ``P.TEST``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in caffe_pb2.Phase.keys():
            return caffe_pb2.Phase.Value(name)
        try:
            message = getattr(caffe_pb2, name + "Parameter")
        except AttributeError:
            raise AttributeError(f"caffe_pb2 has no {name}Parameter (for P.{name})") from None

        class Param:
            def __getattr__(self, enum):
                if enum.startswith("__"):
                    raise AttributeError(enum)
                return getattr(message, enum)
        return Param()


layers = Layers()
params = Parameters()
