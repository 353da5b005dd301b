"""The Label-free pipeline: streamed statistics, the folded steps, stages, errors, LeNet."""
import json
import re

import numpy
import pytest

from pycaffe_lite import rng
from pycaffe_lite.cli import main
from pycaffe_lite.compress import calibration, labelfree, netparams, pipeline, quantizers, streaming
from pycaffe_lite.io import files
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net

from lenet_mnist import LENET, lenet_on_mnist, write_mnist_lmdb


def conv(name, bottom, n, k=3, pad=1, bias=True):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} '
            f'bias_term: {"true" if bias else "false"} weight_filler {{ type: "gaussian" '
            f'std: 0.2 }} bias_filler {{ type: "gaussian" std: 0.5 }} }} }}\n')


def bn(name, blob):
    return (f'layer {{ name: "bn_{name}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }}\n'
            f'layer {{ name: "scale_{name}" type: "Scale" bottom: "{blob}" top: "{blob}" '
            f'scale_param {{ bias_term: true filler {{ type: "uniform" min: 0.5 max: 1.5 }} '
            f'bias_filler {{ type: "gaussian" std: 0.3 }} }} }}\n')


def relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


# conv-BN-ReLU, a residual Eltwise, a pooled FC with BatchNorm, and step restorers of
# every kind: conv alpha terms, Eltwise coeffs, through Pooling, and Power layers (Concat,
# a net output).
SMALL_NET = (
    'name: "small"\n'
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 '
    'dim: 8 dim: 8 } } }\n'
    + conv("c1", "data", 6) + bn("1", "c1") + relu("r1", "c1")
    + conv("c2", "c1", 6) + bn("2", "c2") + relu("r2", "c2")
    + conv("c3", "c2", 6, bias=False) + bn("3", "c3")
    + 'layer { name: "sum" type: "Eltwise" bottom: "c1" bottom: "c3" top: "sum" }\n'
    + relu("r3", "sum")
    + 'layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { '
      'pool: AVE kernel_size: 2 stride: 2 } }\n'
    + 'layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param '
      '{ num_output: 5 weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: '
      '"constant" value: 0.1 } } }\n'
    + bn("4", "fc") + relu("r4", "fc")
    + 'layer { name: "cat" type: "Concat" bottom: "fc" bottom: "fc" top: "cat" }\n'
    + 'layer { name: "out" type: "InnerProduct" bottom: "cat" top: "out" inner_product_param '
      '{ num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }\n'
    + relu("r5", "out"))


def random_weights(model, path, seed=0):
    rng.set_random_seed(seed)
    Net(model, phase=TRAIN).save(str(path))


def images_file(path, n, shape=(3, 8, 8), seed=1):
    data = numpy.random.default_rng(seed).standard_normal((n,) + shape).astype(numpy.float32)
    numpy.save(path, data)
    return calibration.Images(str(path)), data


def test_streamed_statistics_equal_one_big_batch(tmp_path):
    """Chunks of 5 images, BatchNorms in levels = one TRAIN forward of all 37 images."""
    model = tmp_path / "net.prototxt"
    model.write_text(SMALL_NET)
    random_weights(str(model), tmp_path / "w.caffemodel")
    images, data = images_file(tmp_path / "calib.npy", 37)
    param = files.read_net(str(model))
    net = streaming.build(param, str(tmp_path / "w.caffemodel"), data.shape[1:], 5)
    found, passes = streaming.renormalize(net, images, 5, 37)
    assert passes == 4          # bn_1 < bn_2 < bn_3 < bn_4

    big = netparams.deploy_param(param, data.shape)
    for layer in big.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = False
            layer.batch_norm_param.moving_average_fraction = 0
    reference = Net(big, phase=TEST, weights=str(tmp_path / "w.caffemodel"))
    reference.blobs["data"].data[...] = data
    reference.forward_range()
    assert set(found) == {"bn_1", "bn_2", "bn_3", "bn_4"}
    for name, (mean, var) in found.items():
        blobs = reference.params[name]
        assert blobs[2].data[0] == 1
        numpy.testing.assert_allclose(mean, blobs[0].data, rtol=1e-5, atol=1e-5 * numpy.abs(
            blobs[0].data).max())
        numpy.testing.assert_allclose(var, blobs[1].data, rtol=1e-5)
        streamed = net.params[name]
        assert numpy.array_equal(streamed[1].data, var) and streamed[2].data[0] == 1


def run_small(tmp_path, **options):
    model = tmp_path / "net.prototxt"
    model.write_text(SMALL_NET)
    weights = tmp_path / "w.caffemodel"
    if not weights.exists():
        random_weights(str(model), weights)
    options = {"calib": "synthetic", "images": 24, "act_images": 16, "batch": 5,
               "progress": False, **options}
    return labelfree(str(model), str(weights), str(tmp_path / "out"), **options)


def test_output_net_is_the_papers_structure(tmp_path):
    run_small(tmp_path)
    out = tmp_path / "out"
    final = files.read_net(str(out / "train_val.prototxt"))
    types = {layer.name: layer.type for layer in final.layer}
    for name in ("c1", "c2", "c3", "fc", "out"):
        term = [layer for layer in final.layer if layer.name == name + "_alpha_term"]
        assert len(term) == 1 and term[0].type == "Scale" and term[0].bottom == [name]
        assert term[0].scale_param.bias_term == (name != "c3")
    for name in ("r1", "r2", "r3", "r4", "r5"):
        assert types[name] == "Quant"
        layer = [lp for lp in final.layer if lp.name == name][0]
        assert layer.relu_param.negative_slope > 0 and not layer.HasField("quant_param")
    # Concat and a net output cannot take the step: Power layers give it back
    assert types["r4_step"] == "Power" and types["r5_step"] == "Power"
    coeff = [layer for layer in final.layer if layer.name == "sum"][0].eltwise_param.coeff
    steps = {a["layer"]: a["step"] for a in json.loads((out / "report.json").read_text())
             ["activations"]}
    assert coeff[0] == pytest.approx(steps["r1"]) and coeff[1] == 1
    blobs = netparams.weight_blobs(str(out / "quantized.caffemodel"))
    for name in ("c1", "out"):          # first and last: 8-bit fixed point codes
        levels = blobs[name][0]
        assert numpy.array_equal(levels, numpy.round(levels)) and numpy.abs(levels).max() <= 128
    for name in ("c2", "c3", "fc"):     # 4-bit powers of two
        magnitudes = set(numpy.unique(numpy.abs(blobs[name][0])).tolist()) - {0.0}
        exponents = numpy.log2(sorted(magnitudes))
        assert numpy.array_equal(exponents, numpy.round(exponents))
        assert exponents.max() - exponents.min() <= 6 and exponents.min() >= 0
    deploy = files.read_net(str(out / "deploy.prototxt"))
    assert deploy.layer[0].type == "Input"
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]


def test_alpha_terms_compute_alpha_q_new_or_already_there(tmp_path):
    """The weights stage's net = the full-precision net with each W replaced by alpha Q;
    an ``_alpha_term`` Scale the net already has (as the paper's VGG16-BN file) is
    kept, with and without a bias term, and the product folded into it."""
    have = (SMALL_NET.replace(
        bn("2", "c2"), 'layer { name: "c2_alpha_term" type: "Scale" bottom: "c2" top: "c2" '
        'scale_param { bias_term: false filler { type: "uniform" min: 0.5 max: 2 } } }\n'
        + bn("2", "c2")).replace(
        bn("3", "c3"), 'layer { name: "c3_alpha_term" type: "Scale" bottom: "c3" top: "c3" '
        'scale_param { bias_term: true filler { type: "uniform" min: 0.5 max: 2 } '
        'bias_filler { type: "gaussian" std: 0.3 } } }\n' + bn("3", "c3")))
    model = tmp_path / "net.prototxt"
    model.write_text(have)
    random_weights(str(model), tmp_path / "w.caffemodel")
    param = files.read_net(str(model))
    quantized, caffemodel, info = pipeline.quantize_weights(
        param, str(tmp_path / "w.caffemodel"), pipeline.Options())
    names = [layer.name for layer in quantized.layer]
    assert names.count("c2_alpha_term") == names.count("c3_alpha_term") == 1
    assert [layer for layer in quantized.layer
            if layer.name == "c2_alpha_term"][0].scale_param.bias_term       # c2 has a bias
    _, data = images_file(tmp_path / "x.npy", 4)
    ours = streaming.build(quantized, caffemodel, data.shape[1:], 4)
    reference = streaming.build(param, str(tmp_path / "w.caffemodel"), data.shape[1:], 4)
    for entry in info:                  # W -> alpha Q in the full-precision net
        blob = reference.params[entry["layer"]][0]
        levels = ours.params[entry["layer"]][0].data.reshape(blob.shape[0], -1)
        alpha = ours.params[entry["layer"] + "_alpha_term"][0].data
        if entry["layer"] in ("c2", "c3"):   # the alpha term also holds the net's own scale
            alpha = alpha / reference.params[entry["layer"] + "_alpha_term"][0].data
        blob.data[...] = (alpha[:, None] * levels).reshape(blob.shape)
    for net in (ours, reference):
        net.blobs["data"].data[...] = data
        net.forward_range()
    for name in ("c2", "sum", "fc", "out"):
        expected = reference.blobs[name].data
        numpy.testing.assert_allclose(ours.blobs[name].data, expected, rtol=0,
                                      atol=1e-5 * numpy.abs(expected).max())


def test_folded_steps_compute_step_times_code(tmp_path):
    """The final net = the re-normalised net with each ReLU output replaced by step * code."""
    run_small(tmp_path)
    out = tmp_path / "out"
    steps = {a["layer"]: a["step"] for a in json.loads((out / "report.json").read_text())
             ["activations"]}
    images, data = images_file(tmp_path / "check.npy", 6, seed=7)
    reference = streaming.build(files.read_net(str(out / "weights.prototxt")),
                                str(out / "renorm.caffemodel"), data.shape[1:], 6)
    index = {record.name: i for i, record in enumerate(reference.records)}

    after = {}
    for name, step in steps.items():
        record = reference.records[index[name]]

        def hook(y, blob=record.top_blobs[0], step=step):
            blob.data[...] = numpy.float32(step) * quantizers.act_codes(blob.data, step, 127)
        after[index[name]] = hook
    streaming.run_pass(reference, images, 6, 6, len(reference.records) - 1, after=after)
    final = streaming.build(files.read_net(str(out / "train_val.prototxt")),
                            str(out / "quantized.caffemodel"), data.shape[1:], 6)
    final.blobs["data"].data[...] = data
    final.forward_range()
    # "out" is r5's step * code (a Power layer); "sum" and "c2" hold r3's and r2's codes
    for name, step in (("out", 1), ("sum", steps["r3"]), ("c2", steps["r2"])):
        expected = reference.blobs[name].data
        got = final.blobs[name].data * numpy.float32(step)
        numpy.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * numpy.abs(
            expected).max())


def stage_runs(caplog):
    ran = [m.split()[1] for m in caplog.messages if re.fullmatch(r"Stage \w+", m)]
    kept = [m.split()[1][:-1] for m in caplog.messages if "inputs unchanged" in m]
    caplog.clear()
    return ran, kept


def test_a_rerun_keeps_unchanged_stages_and_restart_redoes(tmp_path, caplog):
    caplog.set_level("INFO", logger="pycaffe_lite")
    run_small(tmp_path)
    assert stage_runs(caplog)[0] == list(pipeline.STAGES)
    run_small(tmp_path)
    assert stage_runs(caplog) == ([], list(pipeline.STAGES))
    report = run_small(tmp_path, act_bits=6)
    assert stage_runs(caplog) == (["activations", "report"],
                                  ["calibration", "weights", "renorm"])
    final = (tmp_path / "out" / "train_val.prototxt").read_text()
    assert "ActQuantize" in final and "Quant\"" not in final and "_step" not in final
    assert report["options"]["act_bits"] == 6
    run_small(tmp_path, act_bits=6, restart="renorm")
    assert stage_runs(caplog) == (["renorm", "activations", "report"],
                                  ["calibration", "weights"])
    (tmp_path / "out" / "weights.caffemodel").write_bytes(b"changed")   # an output damaged
    run_small(tmp_path, act_bits=6)
    assert stage_runs(caplog)[0] == ["weights"]   # remade the same: what reads it is kept
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert set(state["stages"]) == set(pipeline.STAGES)
    for stage in state["stages"].values():
        assert stage["seconds"] >= 0 and stage["peak_rss_mb"] > 0
    assert not list((tmp_path / "out").glob(".tmp_*"))


def test_act_bits_other_than_8_give_act_quantize_layers_equal_to_step_times_code(tmp_path):
    run_small(tmp_path, act_bits=4)
    final = files.read_net(str(tmp_path / "out" / "train_val.prototxt"))
    layers = [layer for layer in final.layer if layer.type == "ActQuantize"]
    assert len(layers) == 5
    assert all(layer.act_quantize_param.bits == 3 and layer.act_quantize_param.step > 0
               for layer in layers)


# --- errors -----------------------------------------------------------------------------

def cli(*args):
    return main(["compress", "labelfree", *args])


def test_errors_name_what_is_wrong(tmp_path, capsys):
    model = tmp_path / "net.prototxt"
    model.write_text(SMALL_NET)
    weights = tmp_path / "w.caffemodel"
    random_weights(str(model), weights)
    base = [f"--model={model}", f"--weights={weights}", f"--out={tmp_path / 'o'}",
            "--noprogress"]

    def error(*extra):
        assert cli(*base, *extra) == 1
        return capsys.readouterr().err.strip().splitlines()[-1]
    assert "no TRAIN data layer to calibrate from" in error()
    assert error("--calib=synthetic", "--weight_bits=7") == (
        "caffe_lite: error: --weight-bits must be 2..6, got 7")
    assert "--act-bits must be 2..16, got 1" in error("--calib=synthetic", "--act_bits=1")
    assert "--first-last-bits must be 2..16, got 40" in error("--calib=synthetic",
                                                              "--first_last_bits=40")
    assert "calibration source 'nowhere' does not exist" in error("--calib=nowhere")
    listing = tmp_path / "list.txt"
    import cv2
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"{k}.png"), numpy.full((8, 8, 3), 40 * k, numpy.uint8))
    listing.write_text("".join(f"{tmp_path / f'{k}.png'} 0\n" for k in range(3)))
    assert error(f"--calib={listing}", "--images=10").endswith(
        f"calibration source '{listing}' holds 3 images; 10 asked (ask for at most 3, e.g. "
        "--images 3)")
    no_scale = tmp_path / "noscale.prototxt"
    no_scale.write_text(SMALL_NET.replace(bn("2", "c2"), 'layer { name: "bn_2" type: '
                                          '"BatchNorm" bottom: "c2" top: "c2" }\n'))
    assert cli(f"--model={no_scale}", f"--weights={weights}", f"--out={tmp_path / 'o2'}",
               "--calib=synthetic", "--noprogress") == 1
    assert ("layer 'bn_2' (BatchNorm) has no Scale layer after it" in
            capsys.readouterr().err)
    no_conv = tmp_path / "noconv.prototxt"
    no_conv.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape '
                       '{ dim: 1 dim: 3 } } }\n' + relu("r", "data"))
    assert cli(f"--model={no_conv}", f"--weights={weights}", f"--out={tmp_path / 'o3'}",
               "--calib=synthetic", "--noprogress") == 1
    assert "no Convolution or InnerProduct layer to quantise" in capsys.readouterr().err
    assert cli(*base, "--calib=synthetic", "--restart=bogus") == 1
    assert "--restart must be one of calibration, weights" in capsys.readouterr().err


def test_calibration_from_an_image_list_uses_the_nets_transform(tmp_path):
    import cv2
    for k in range(4):
        cv2.imwrite(str(tmp_path / f"{k}.png"), numpy.full((10, 10, 3), 50 * k, numpy.uint8))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{tmp_path / f'{k}.png'} {k}\n" for k in range(4)))
    param = files.parse_text(
        'layer { name: "d" type: "ImageData" top: "data" top: "label" include { phase: '
        'TRAIN } transform_param { scale: 0.5 crop_size: 6 } image_data_param { source: '
        '"x" batch_size: 2 } }', __import__("pycaffe_lite").proto.caffe_pb2.NetParameter())
    layer = calibration.source_layer(param, str(listing))
    shape = calibration.write(layer, 3, str(tmp_path / "c.npy"), chunk=2)
    assert shape == (3, 3, 6, 6)
    data = numpy.load(tmp_path / "c.npy")
    assert [float(data[k].max()) for k in range(3)] == [0.0, 25.0, 50.0]
    assert numpy.array_equal(numpy.concatenate(list(calibration.Images(
        str(tmp_path / "c.npy")).chunks(2))), data)


# --- LeNet on MNIST ---------------------------------------------------------------------

def test_lenet_loses_at_most_half_a_point_on_mnist(tmp_path, capsys):
    """4-bit weights / 8-bit activations, 1000 calibration images (the first 1000 of the
    MNIST test set, labels unread): at most 0.5 points below 99.14 % on all 10,000."""
    db, model = lenet_on_mnist(tmp_path)
    out = tmp_path / "out"
    assert cli(f"--model={model}", f"--weights={LENET / 'lenet_iter_10000.caffemodel'}",
               f"--out={out}", f"--calib={db}", "--noprogress") == 0
    report = json.loads((out / "report.json").read_text())
    rows = {row["net"]: row["accuracy"] for row in report["accuracy"]["rows"]}
    assert report["accuracy"]["images"] == 10000
    assert rows["full precision"] == pytest.approx(0.9914, abs=1e-6)
    assert rows["final"] >= 0.9914 - 0.005
    print(f"LeNet MNIST: {rows}")
    capsys.readouterr()
    # caffe_lite test scores the output files directly, to the same figure
    assert main(["test", f"--model={out / 'train_val.prototxt'}",
                 f"--weights={out / 'quantized.caffemodel'}", "--iterations=100"]) == 0
    summary = re.findall(r"\] accuracy = ([\d.]+)$", capsys.readouterr().err, re.M)
    assert float(summary[-1]) == pytest.approx(rows["final"], abs=1e-4)
    for name in ("report.md", "report.png", "deploy.prototxt"):
        assert (out / name).stat().st_size > 0


# --- the example: a Fashion-MNIST BN net, trained, then compressed ---------------------

FASHION = __import__("pathlib").Path("/usr/share/datasets/fashion-mnist")
EXAMPLE = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "labelfree"


@pytest.mark.slow
def test_fashion_mnist_bn_example_within_one_point(tmp_path):
    """examples/labelfree: train (2000 iterations), compress; at most 1 point lost, and
    re-normalisation helps (final > weights quantised without it)."""
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found in {FASHION} (apt-get install "
                    "dataset-fashion-mnist)")
    for part, prefix in (("train", "train"), ("test", "t10k")):
        write_mnist_lmdb(FASHION / f"{prefix}-images-idx3-ubyte.gz",
                         FASHION / f"{prefix}-labels-idx1-ubyte.gz", tmp_path / f"{part}_lmdb")
    net = (EXAMPLE / "fmnist_bn_train_test.prototxt").read_text()
    net = net.replace("examples/mnist/mnist_train_lmdb", str(tmp_path / "train_lmdb"))
    net = net.replace("examples/mnist/mnist_test_lmdb", str(tmp_path / "test_lmdb"))
    (tmp_path / "net.prototxt").write_text(net)
    solver = (EXAMPLE / "fmnist_bn_solver.prototxt").read_text()
    solver = solver.replace('"examples/labelfree/fmnist_bn_train_test.prototxt"',
                            f'"{tmp_path / "net.prototxt"}"')
    solver = solver.replace('"examples/labelfree/fmnist_bn"', f'"{tmp_path / "fmnist_bn"}"')
    (tmp_path / "solver.prototxt").write_text(solver)
    assert main(["train", f"--solver={tmp_path / 'solver.prototxt'}", "--noprogress"]) == 0
    report = labelfree(str(tmp_path / "net.prototxt"), str(tmp_path / "fmnist_bn_iter_2000"
                       ".caffemodel"), str(tmp_path / "out"), progress=False)
    rows = {row["net"]: row for row in report["accuracy"]["rows"]}
    full, final = rows["full precision"]["accuracy"], rows["final"]["accuracy"]
    print({name: (row["accuracy"], row["accuracy_top5"]) for name, row in rows.items()})
    assert final >= full - 0.01
    assert final > rows["weights quantised, no re-normalisation"]["accuracy"]
