"""pycaffe's interface: `import pycaffe_lite as caffe` where `import caffe` was."""
import collections

import numpy
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.proto import caffe_pb2

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  param { name: "shared_w" } inner_product_param { num_output: 5
  weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "ip2" type: "InnerProduct" bottom: "data" top: "ip2"
  param { name: "shared_w" } inner_product_param { num_output: 5 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "ip2" top: "sum" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss" }
"""


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    return str(path)


def test_both_constructor_forms(model, tmp_path):
    caffe.set_random_seed(3)
    net = caffe.Net(model, caffe.TRAIN)
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    a = caffe.Net(model, weights, caffe.TEST)
    b = caffe.Net(model, caffe.TEST, weights=weights)
    for name in net.params:
        for pa, pb, p in zip(a.params[name], b.params[name], net.params[name]):
            numpy.testing.assert_array_equal(pa.data, p.data)
            numpy.testing.assert_array_equal(pb.data, p.data)
    with pytest.raises(CaffeError, match="caffe.Net"):
        caffe.Net(model)


def test_names_and_dicts(model):
    net = caffe.Net(model, caffe.TRAIN)
    assert isinstance(net.blobs, collections.OrderedDict)
    assert isinstance(net.params, collections.OrderedDict)
    assert net.inputs == ["data", "label"]
    assert net.outputs == ["loss"]
    assert list(net.params) == ["ip", "ip2"]
    assert net._layer_names[:2] == ["data", "data_data_0_split"]
    assert net.layer_dict["ip"].type == "InnerProduct"
    assert net.top_names["ip"] == ["ip"]
    assert net.blob_loss_weights["loss"] == 1.0
    assert "ReLU" in caffe.layer_type_list() and "Convolution" in caffe.layer_type_list()


def test_shared_params_share_data_and_diff(model):
    net = caffe.Net(model, caffe.TRAIN)
    w1, w2 = net.params["ip"][0], net.params["ip2"][0]
    assert numpy.shares_memory(w1.data, w2.data) and numpy.shares_memory(w1.diff, w2.diff)
    assert len(net.learnable_params) == 2  # the shared weight once, plus ip's bias


def test_forward_backward_with_kwargs(model):
    caffe.set_random_seed(1)
    net = caffe.Net(model, caffe.TRAIN)
    rs = numpy.random.RandomState(0)
    data = rs.standard_normal((4, 3)).astype(numpy.float32)
    label = numpy.array([0, 1, 2, 3], numpy.float32)
    out = net.forward(data=data, label=label)
    assert set(out) == {"loss"} and out["loss"].shape == ()
    # numeric reference for the loss
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    scores = numpy.maximum(data @ w.T + b, 0) + data @ w.T
    p = numpy.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert float(out["loss"]) == pytest.approx(-numpy.log(p[range(4), [0, 1, 2, 3]]).mean(),
                                               rel=1e-5)
    out = net.forward(blobs=["ip"], end="ip")
    assert set(out) == {"ip"}
    net.clear_param_diffs()
    net.forward(data=data, label=label)
    diffs = net.backward(diffs=["sum"])
    assert set(diffs) == {"data", "label", "sum"}
    assert net.params["ip"][0].diff.any()


def test_forward_all_batches_and_trims(tmp_path):
    path = tmp_path / "d.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 4 dim: 2 } } }\n'
                    'layer { name: "p" type: "Power" bottom: "data" top: "p" '
                    'power_param { scale: 2 } }')
    net = caffe.Net(str(path), caffe.TEST)
    data = numpy.arange(20, dtype=numpy.float32).reshape(10, 2)
    out = net.forward_all(data=data)
    numpy.testing.assert_array_equal(out["p"], 2 * data)


def test_save_writes_a_caffemodel_caffe_can_read(model, tmp_path):
    net = caffe.Net(model, caffe.TRAIN)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    proto = caffe_pb2.NetParameter()
    proto.ParseFromString(path.read_bytes())
    ip = [l for l in proto.layer if l.name == "ip"][0]
    assert list(ip.blobs[0].shape.dim) == [5, 3]
    numpy.testing.assert_array_equal(numpy.array(ip.blobs[0].data).reshape(5, 3),
                                     net.params["ip"][0].data)
    assert not list(path.parent.glob(".tmp_*"))  # written through a temporary file


def test_copy_from_and_reshape(model, tmp_path):
    a = caffe.Net(model, caffe.TRAIN)
    path = str(tmp_path / "w.caffemodel")
    a.save(path)
    b = caffe.Net(model, caffe.TRAIN)
    b.copy_from(path)
    numpy.testing.assert_array_equal(a.params["ip"][1].data, b.params["ip"][1].data)
    b.blobs["data"].reshape(7, 3)
    b.blobs["label"].reshape(7)
    b.reshape()
    assert b.blobs["ip"].shape == (7, 5)


def test_set_random_seed_makes_fillers_repeatable(model):
    caffe.set_random_seed(42)
    a = caffe.Net(model, caffe.TRAIN).params["ip"][0].data.copy()
    caffe.set_random_seed(42)
    b = caffe.Net(model, caffe.TRAIN).params["ip"][0].data.copy()
    numpy.testing.assert_array_equal(a, b)


def test_mode_switches(model):
    caffe.set_mode_cpu()
    from pycaffe_lite import backend
    if not backend.gpu_available():
        caffe.set_mode_gpu()                  # as a CPU-only Caffe build: fails at first use
        try:
            with pytest.raises(CaffeError, match="set_mode_gpu.*no usable GPU"):
                caffe.Net(model, caffe.TEST)
        finally:
            caffe.set_mode_cpu()


def test_save_hdf5_load_hdf5_in_caffes_layout(model, tmp_path):
    import h5py
    net = caffe.Net(model, caffe.TRAIN)
    rng = numpy.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.shape)
            blob.diff[...] = rng.standard_normal(blob.shape)
    path = tmp_path / "w.h5"
    net.save_hdf5(str(path), write_diff=True)
    with h5py.File(path, "r") as h5:
        assert set(h5) == {"data", "diff"}
        assert set(h5["data"]) == set(net.layer_names)       # every layer has a group
        assert "0" not in h5["data"]["ip2"]       # shared with ip: written by its owner only
        first = next(name for name in net.params)
        numpy.testing.assert_array_equal(h5["data"][first]["0"], net.params[first][0].data)
        numpy.testing.assert_array_equal(h5["diff"][first]["0"], net.params[first][0].diff)
    again = caffe.Net(model, caffe.TRAIN)
    again.load_hdf5(str(path))
    for name in net.params:
        for a, b in zip(net.params[name], again.params[name]):
            numpy.testing.assert_array_equal(a.data, b.data)
    third = caffe.Net(model, caffe.TEST, weights=str(path))   # copy_from knows HDF5 too
    for name in third.params:
        numpy.testing.assert_array_equal(third.params[name][0].data, net.params[name][0].data)


def test_load_hdf5_errors(model, tmp_path):
    import h5py
    net = caffe.Net(model, caffe.TRAIN)
    name = next(iter(net.params))
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset(f"data/{name}/0", data=numpy.zeros((1, 2)))
    with pytest.raises(CaffeError, match=f"cannot copy param 0 of layer '{name}': shape"):
        net.load_hdf5(str(path))
    with h5py.File(path, "w") as h5:
        h5.create_group("weights")
    with pytest.raises(CaffeError, match="no 'data' group"):
        net.load_hdf5(str(path))


def test_share_with_and_has_nccl(model):
    train = caffe.Net(model, caffe.TRAIN)
    test = caffe.Net(model, caffe.TEST)
    test.share_with(train)
    name = next(iter(train.params))
    train.params[name][0].data[...] = 3
    assert (test.params[name][0].data == 3).all()
    assert caffe.has_nccl() is False


def test_low_level_names_and_forward_backward_all(model):
    net = caffe.Net(model, caffe.TRAIN)
    assert net._blob_names == list(net.blobs) and net._blobs[0] is net.blobs["data"]
    assert [net._blob_names[i] for i in net._inputs] == net.inputs
    assert [net._blob_names[i] for i in net._outputs] == net.outputs
    ip = net._layer_names.index("ip")
    assert net._blob_names[net._bottom_ids(ip)[0]].startswith("data")   # via its Split
    assert [net._blob_names[i] for i in net._top_ids(ip)] == ["ip"]
    data = numpy.random.default_rng(1).standard_normal((10, 3)).astype(numpy.float32)
    label = numpy.arange(10) % 5
    batches = list(net._batch({"data": data}))
    assert len(batches) == 3 and (batches[-1]["data"][2:] == 0).all()
    outs, diffs = net.forward_backward_all(data=data, label=label)
    assert outs["loss"].shape == (3,) and diffs["data"].shape == (10, 3)   # a loss per batch
    single = caffe.Net(model, caffe.TRAIN)
    single.share_with(net)
    loss = single.forward(data=data[:4], label=label[:4])["loss"]
    single.backward()
    numpy.testing.assert_allclose(outs["loss"][0], loss, rtol=1e-6)
    numpy.testing.assert_allclose(diffs["data"][:4], single.blobs["data"].diff, rtol=1e-6)


def test_module_odds_and_ends(capsys):
    timer = caffe.Timer()
    timer.start()
    timer.stop()
    assert timer.ms >= 0
    caffe.init_log(0)
    caffe.log("hello from pycaffe")
    assert "hello from pycaffe" in capsys.readouterr().err
    with pytest.raises(CaffeError, match="no NCCL"):
        caffe.NCCL(None, None)
    caffe.set_solver_count(2)
    caffe.set_solver_rank(1)
    assert (caffe.solver_count(), caffe.solver_rank()) == (2, 1)
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)


def test_forward_and_backward_hooks_see_every_layer_in_order(model):
    net = caffe.Net(model, caffe.TRAIN)
    calls = []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i, float(net.blobs["loss"].data))))
    net.before_backward(lambda i: calls.append(("bb", i)))
    net.after_backward(lambda i: calls.append(("ab", i)))
    data = numpy.random.default_rng(2).standard_normal((4, 3)).astype(numpy.float32)
    loss = net.forward(data=data, label=numpy.arange(4) % 5)["loss"]
    n = len(net.layers)
    assert [c[:2] for c in calls] == [(w, i) for i in range(n) for w in ("bf", "af")]
    assert calls[-1][2] == pytest.approx(float(loss))   # after the loss layer ran
    calls.clear()
    net.backward()
    # every layer, including the ones that need no backward (Input), as Caffe's callbacks
    assert calls == [(w, i) for i in reversed(range(n)) for w in ("bb", "ab")]
    with pytest.raises(CaffeError, match="unknown hook 'during_forward'"):
        net.add_hook("during_forward", print)


def test_built_in_layer_blobs_add_blob(model):
    net = caffe.Net(model, caffe.TEST)
    ip = net.layer_dict["ip"]
    ip.blobs.add_blob(2, 3)
    assert len(ip.blobs) == 3 and ip.blobs[2].data.shape == (2, 3)
    assert (ip.blobs[2].data == 0).all() and ip.blobs[2].data.dtype == numpy.float32
    relu = net.layer_dict["relu"]
    relu.blobs.add_blob(4)
    assert relu.blobs[0].shape == (4,)


def test_forward_and_backward_from_and_to_named_layers(model):
    # pycaffe's forward(start=, end=) / backward(start=, end=): only those layers run.
    net = caffe.Net(model, caffe.TRAIN)
    data = numpy.random.default_rng(4).standard_normal((4, 3)).astype(numpy.float32)
    net.forward(data=data, label=numpy.arange(4) % 5)
    net.blobs["ip"].data[...] = 7.0                      # as if ip/relu had given 7
    out = net.forward(start="sum", end="sum")
    numpy.testing.assert_allclose(out["sum"], 7.0 + net.blobs["ip2"].data, rtol=1e-6)
    net.clear_param_diffs()
    net.blobs["sum"].diff[...] = 1.0
    got = net.backward(start="sum", end="ip2")
    assert set(got) == {"data_data_0_split_1"}             # ip2's bottom
    # ip2 = data @ W.T, W shared with ip: d/dW of sum(ip2) is the column sums of data
    numpy.testing.assert_allclose(net.params["ip2"][0].diff,
                                  numpy.tile(data.sum(0), (5, 1)), rtol=1e-5)
    assert not net.params["ip"][1].diff.any()             # ip's bias: not run
