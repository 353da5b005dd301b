"""The net executor: NetState filtering, Splits, sharing, loss weights, backward pruning."""
import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite.errors import NetError
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net, filter_net, insert_splits, state_meets_rule
from pycaffe_lite.proto import caffe_pb2


def net_param(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'


@pytest.mark.parametrize("rule,state,expected", [
    ("phase: TRAIN", dict(phase=TRAIN), True),
    ("phase: TRAIN", dict(phase=TEST), False),
    ("min_level: 1", dict(level=0), False),
    ("min_level: 1", dict(level=1), True),
    ("max_level: 1", dict(level=2), False),
    ('stage: "a" stage: "b"', dict(stage=["a"]), False),
    ('stage: "a" stage: "b"', dict(stage=["b", "a"]), True),
    ('not_stage: "a"', dict(stage=["a"]), False),
    ('not_stage: "a"', dict(stage=["c"]), True),
])
def test_state_meets_rule(rule, state, expected):
    rule = text_format.Parse(rule, caffe_pb2.NetStateRule())
    assert state_meets_rule(caffe_pb2.NetState(**state), rule) is expected


def test_filter_include_exclude():
    param = net_param(INPUT + """
        layer { name: "a" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
        layer { name: "b" type: "ReLU" bottom: "x" top: "b" exclude { phase: TRAIN } }
        layer { name: "c" type: "ReLU" bottom: "x" top: "c" include { stage: "s" } }""")
    names = lambda p: [l.name for l in p.layer]  # noqa: E731
    assert names(filter_net(param, caffe_pb2.NetState(phase=TRAIN))) == ["in", "a"]
    assert names(filter_net(param, caffe_pb2.NetState(phase=TEST, stage=["s"]))) == [
        "in", "b", "c"]
    bad = net_param(INPUT + 'layer { name: "d" type: "ReLU" bottom: "x" top: "d" '
                    'include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(NetError, match="'d'.*either include or exclude"):
        filter_net(bad, caffe_pb2.NetState())


def test_insert_splits_names_like_caffe():
    param = net_param(INPUT + """
        layer { name: "r1" type: "ReLU" bottom: "x" top: "y" }
        layer { name: "r2" type: "ReLU" bottom: "x" top: "z" }
        layer { name: "r3" type: "ReLU" bottom: "x" top: "w" }""")
    out = insert_splits(param)
    split = out.layer[1]
    assert (split.name, split.type) == ("x_in_0_split", "Split")
    assert list(split.top) == [f"x_in_0_split_{k}" for k in range(3)]
    assert [l.bottom[0] for l in out.layer[2:]] == [f"x_in_0_split_{k}" for k in range(3)]


def test_insert_splits_for_a_loss_that_is_also_consumed():
    param = net_param(INPUT + """
        layer { name: "e" type: "ReLU" bottom: "x" top: "y" loss_weight: 2 }
        layer { name: "f" type: "ReLU" bottom: "y" top: "z" }""")
    out = insert_splits(param)
    split = out.layer[2]
    assert list(split.top) == ["y_e_0_split_0", "y_e_0_split_1"]
    assert list(split.loss_weight) == [0, 2]


def test_split_backward_sums_diffs():
    net = Net(net_param(INPUT + """force_backward: true
        layer { name: "a" type: "Power" bottom: "x" top: "a" power_param { scale: 2 } }
        layer { name: "b" type: "Power" bottom: "x" top: "b" power_param { scale: 3 } }"""))
    net.forward_range()
    net.blobs["a"].diff[...] = 1
    net.blobs["b"].diff[...] = 1
    net.backward_range()
    numpy.testing.assert_allclose(net.blobs["x"].diff, 5.0)


def test_unknown_bottom_and_duplicate_top():
    with pytest.raises(NetError, match="layer 'r'.*unknown bottom blob 'nope'"):
        Net(net_param(INPUT + 'layer { name: "r" type: "ReLU" bottom: "nope" top: "y" }'))
    with pytest.raises(NetError, match="top blob 'x' is already produced"):
        Net(net_param(INPUT + 'layer { name: "r" type: "Input" top: "x" '
                      'input_param { shape { dim: 1 } } }'))


def test_unknown_type_lists_known_types():
    with pytest.raises(NetError, match="unknown layer type 'Foo'; known types: .*ReLU"):
        Net(net_param(INPUT + 'layer { name: "r" type: "Foo" bottom: "x" top: "y" }'))


def test_loss_weight_scales_loss_and_gradient():
    text = "force_backward: true\n" + INPUT + """layer { name: "p" type: "Power" bottom: "x" top: "y" loss_weight: 0.5
                       power_param { power: 2 } }"""
    net = Net(net_param(text))
    net.blobs["x"].data[...] = numpy.arange(6).reshape(2, 3)
    loss = net.forward_backward()
    assert loss == pytest.approx(0.5 * (numpy.arange(6) ** 2).sum())
    numpy.testing.assert_allclose(net.blobs["x"].diff, 0.5 * 2 * numpy.arange(6).reshape(2, 3))


def test_backward_pruned_where_no_loss_and_forced_otherwise():
    text = INPUT + """layer { name: "p" type: "Power" bottom: "x" top: "y" }
                      layer { name: "q" type: "Power" bottom: "y" top: "z" loss_weight: 1 }
                      layer { name: "r" type: "Power" bottom: "x" top: "w" }"""
    net = Net(net_param(text))
    # x is an input: nothing needs its gradient, so nothing runs backward
    assert [record.need_backward for record in net.records] == [False] * 5
    forced = Net(net_param("force_backward: true\n" + text))
    assert all(record.need_backward for record in forced.records)


@pytest.mark.parametrize("propagate", [None, "false"])
def test_propagate_down_false_stops_gradient(propagate):
    flag = f"propagate_down: {propagate}" if propagate else ""
    text = INPUT + f"""
        layer {{ name: "s" type: "Scale" bottom: "x" top: "y" scale_param {{ axis: 0 }} }}
        layer {{ name: "q" type: "Power" bottom: "y" top: "z" loss_weight: 1 {flag} }}"""
    net = Net(net_param(text))
    net.blobs["x"].data[...] = 1
    net.forward_backward()
    wanted = propagate is None
    assert net.records[2].bottom_need_backward == [wanted]
    assert net.records[1].need_backward is wanted  # Scale's param gradient is skipped too
    assert bool(net.params["s"][0].diff.any()) is wanted


def test_in_place_layers_share_the_blob():
    text = INPUT + """layer { name: "r" type: "ReLU" bottom: "x" top: "x" }
                      layer { name: "s" type: "Power" bottom: "x" top: "x" power_param { shift: 1 } }"""
    net = Net(net_param(text))
    net.blobs["x"].data[...] = -1
    net.forward_range()
    numpy.testing.assert_array_equal(net.blobs["x"].data, 1.0)
    assert list(net.blobs) == ["x"]
    assert net.output_names == ["x"]


IP_LOSS = INPUT + """
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
      param { lr_mult: 0 } param { lr_mult: 1 }
      inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
    layer { name: "q" type: "Power" bottom: "y" top: "z" loss_weight: 1
      power_param { power: 2 } }"""


def test_lr_mult_zero_params_get_no_gradient_unless_forced():
    net = Net(net_param(IP_LOSS))
    net.blobs["x"].data[...] = 1
    net.forward_backward()
    assert net.layers[1].param_propagate_down == [False, True]
    assert not net.params["ip"][0].diff.any() and net.params["ip"][1].diff.any()
    forced = Net(net_param("force_backward: true\n" + IP_LOSS))
    forced.blobs["x"].data[...] = 1
    forced.forward_backward()
    assert forced.params["ip"][0].diff.any()  # Caffe computes them under force_backward


def test_a_record_per_layer_holds_its_wiring_and_which_params_are_frozen():
    net = Net(net_param(IP_LOSS))
    record = net.records[1]
    assert (record.name, record.layer, record.bottoms, record.tops) == (
        "ip", net.layers[1], ["x"], ["y"])
    assert record.bottom_blobs == [net.blobs["x"]] and record.top_blobs == [net.blobs["y"]]
    assert record.need_backward and record.bottom_need_backward == [False]
    assert net.param_frozen(1, 0) and not net.param_frozen(1, 1)
    net.freeze_param(1, 1)
    assert net.layers[1].param_propagate_down == [False, False]
    net.blobs["x"].data[...] = 1
    net.params["ip"][1].diff[...] = 7
    net.forward_backward()
    assert (net.params["ip"][1].diff == 7).all()     # a frozen diff is left as it was


def test_remove_layers_drops_their_records_and_learnable_params():
    net = Net(net_param(IP_LOSS))
    net.remove_layers([2])
    assert net.layer_names == ["in", "ip"] and list(net.layer_dict) == ["in", "ip"]
    assert len(net.learnable_params) == 2 and list(net.params) == ["ip"]
    net.add_param(1, net.layers[1].make_blob((3,)))
    assert len(net.params["ip"]) == 3 and net.learnable_params[-1] is net.params["ip"][2]
    assert net.layers[1].param_propagate_down == [False, True, True]
    net.remove_layers([1])
    assert net.layer_names == ["in"] and net.learnable_params == [] and net.param_specs == []


def test_loss_layer_without_top_gets_an_unnamed_one():
    """Caffe's AutoTopBlobs: an old net's loss layer written without a top still counts."""
    text = ('layer { name: "in" type: "Input" top: "x" top: "y" '
            'input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" }')
    net = Net(net_param(text))
    net.blobs["x"].data[...] = 1
    assert net.forward_range() == pytest.approx(6 / (2 * 2))
    assert list(net.blobs) == ["x", "y"] and net.output_names == []
