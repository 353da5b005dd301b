"""pycaffe's NetSpec (pycaffe_lite/net_spec.py): the behaviour BVLC's
python/caffe/test/test_net_spec.py checks, and the rest of what its notebooks use
(param lists, include rules, loss weights, Python layers, enums, our own types).
"""
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import layers as L
from pycaffe_lite import params as P
from pycaffe_lite.net_spec import assign_proto, param_name_dict
from pycaffe_lite.proto import caffe_pb2


def _lenet(batch, named=True):
    n = caffe.NetSpec() if named else None
    data, label = L.DummyData(shape=[dict(dim=[batch, 1, 28, 28]), dict(dim=[batch, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=dict(type="xavier"))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type="xavier"))
    loss = L.SoftmaxWithLoss(ip2, label)
    if not named:
        return loss.to_proto()
    for name, top in (("data", data), ("label", label), ("conv1", conv1), ("pool1", pool1),
                      ("conv2", conv2), ("pool2", pool2), ("ip1", ip1), ("relu1", relu1),
                      ("ip2", ip2), ("loss", loss)):
        n[name] = top
    return n.to_proto()


def _load(tmp_path, proto, phase=caffe.TEST):
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


@pytest.mark.parametrize("named", [True, False])
def test_lenet_builds_and_runs(tmp_path, named):
    proto = _lenet(4, named)
    assert proto.layer[6].type == "ReLU" and proto.layer[6].bottom == proto.layer[6].top
    assert proto.layer[1].convolution_param.kernel_size == [5]
    assert proto.layer[1].convolution_param.weight_filler.type == "xavier"
    assert proto.layer[0].transform_param.scale == pytest.approx(1. / 255)
    assert proto.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    if named:
        assert [layer.name for layer in proto.layer][:3] == ["data", "conv1", "pool1"]
        assert list(proto.layer[0].top) == ["data", "label"]
    else:   # automatic names: <Type><n>
        assert [layer.name for layer in proto.layer][:3] == [
            "DummyData1", "Convolution1", "Pooling1"]
        assert proto.layer[3].name == "Convolution2" and proto.layer[-1].bottom[1] == "DummyData2"
    net = _load(tmp_path, proto)
    assert len(net.layers) == 9
    assert list(net.forward()) == ["loss" if named else "SoftmaxWithLoss1"]


def test_zero_tops(tmp_path):
    n = caffe.NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    proto = n.to_proto()
    assert [layer.name for layer in proto.layer] == ["data", "silence_data", "silence_data2"]
    assert list(proto.layer[0].dummy_data_param.shape[0].dim) == [3]
    assert len(_load(tmp_path, proto).forward()) == 0


def test_an_input_that_is_not_a_top_is_a_type_error():
    data = L.DummyData(ntop=2)
    message = r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"
    with pytest.raises(TypeError, match=message):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)


def test_layer_fields_params_rules_and_python_layers(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module="my_module", layer="MyData", param_str="{'batch': 2}",
                               ntop=2, include=dict(phase=P.TRAIN))
    n.fc = L.InnerProduct(n.data, num_output=3, param=[dict(lr_mult=1, decay_mult=1),
                                                        dict(lr_mult=2, decay_mult=0)],
                          bias_filler=dict(type="constant", value=0.5))
    n.loss = L.SoftmaxWithLoss(n.fc, n.label, loss_weight=2,
                               loss_param=dict(ignore_label=255, normalize=False))
    proto = n.to_proto()
    data, fc, loss = proto.layer
    assert (data.python_param.module, data.python_param.layer) == ("my_module", "MyData")
    assert data.python_param.param_str == "{'batch': 2}"
    assert data.include[0].phase == caffe.TRAIN
    assert [(p.lr_mult, p.decay_mult) for p in fc.param] == [(1, 1), (2, 0)]
    assert fc.inner_product_param.bias_filler.value == 0.5
    assert list(loss.loss_weight) == [2.0]
    assert loss.loss_param.ignore_label == 255 and not loss.loss_param.normalize


def test_geometry_of_layers_that_share_convolution_param():
    """Deconvolution and the Binary / Q layers read their geometry from
    convolution_param / inner_product_param: keywords go there (BVLC would fail)."""
    x = L.Input(shape=dict(dim=[1, 4, 8, 8]))
    proto = caffe.to_proto(L.Deconvolution(x, kernel_size=2, stride=2, num_output=3),
                           L.QConvolution(x, kernel_size=3, num_output=4, subspace_dim=2),
                           L.BinaryInnerProduct(x, num_output=5, use_alpha=True))
    deconv, qconv, binip = proto.layer[1:]
    assert list(deconv.convolution_param.stride) == [2]
    assert qconv.q_convolution_param.subspace_dim == 2
    assert qconv.convolution_param.num_output == 4
    assert binip.binary_inner_product_param.use_alpha
    assert binip.inner_product_param.num_output == 5


def test_unknown_keyword_names_the_layer_type():
    x = L.Input(shape=dict(dim=[1, 2]))
    with pytest.raises(AttributeError, match="ReLU: 'kernel_size' is a field of neither "
                                             "ReLUParameter nor LayerParameter"):
        L.ReLU(x, kernel_size=3).to_proto()


def test_params_and_the_type_table():
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    assert P.TEST == caffe.TEST and P.TRAIN == caffe.TRAIN
    with pytest.raises(AttributeError, match="no NoSuchParameter"):
        P.NoSuch
    names = param_name_dict()
    assert names["Convolution"] == "convolution" and names["QInnerProduct"] == "q_inner_product"
    assert names["ActQuantize"] == "act_quantize" and names["Quant"] == "quant"


def test_assign_proto_wraps_scalars_for_repeated_fields():
    shape = caffe_pb2.BlobShape()
    assign_proto(shape, "dim", 7)
    assert list(shape.dim) == [7]
    layer = caffe_pb2.LayerParameter()
    assign_proto(layer, "include", [dict(phase=1, stage=["a", "b"])])
    assert list(layer.include[0].stage) == ["a", "b"]


def test_layers_package_is_both_implementations_and_netspec():
    import pycaffe_lite.layers.conv as conv
    assert conv.ConvolutionLayer.type == "Convolution"
    assert callable(L.Convolution) and L.Convolution.__name__ == "Convolution"
    with pytest.raises(AttributeError):
        L.no_such_module
