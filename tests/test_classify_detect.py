"""caffe.Classifier, caffe.Detector and the classify / detect tools (BVLC's
python/classify.py and detect.py): against crops and forwards worked out here,
and a real CIFAR-10 model on real images."""
import csv

import h5py
import numpy
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.io import caffe_io
from pycaffe_lite.tools import classify as classify_tool
from pycaffe_lite.tools import detect as detect_tool
from conftest import FIXTURES

CIFAR = FIXTURES / "models" / "cifar10_quick_v1"

# A small random conv net on 3 x 6 x 6 inputs (a 10-way softmax).
NET = """name: "small"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def small(tmp_path):
    model = tmp_path / "small.prototxt"
    model.write_text(NET)
    caffe.set_random_seed(5)
    weights = tmp_path / "small.caffemodel"
    caffe.Net(str(model), caffe.TEST).save(str(weights))
    return str(model), str(weights)


def images(n, shape, seed=0):
    rng = numpy.random.default_rng(seed)
    return [rng.random(shape).astype(numpy.float32) for _ in range(n)]


def preprocess(crop, mean, raw_scale, swap):
    """pycaffe's preprocessing written out: H x W x K in [0, 1] -> K x H x W."""
    return crop.transpose(2, 0, 1)[list(swap)] * raw_scale - mean[:, None, None]


def forward_one(model, weights, x):
    net = caffe.Net(model, caffe.TEST, weights=weights)
    net.blobs["data"].reshape(1, *x.shape)
    return net.forward(data=x[None])["prob"][0].copy()


def test_classifier_oversample_averages_ten_crops(small):
    model, weights = small
    mean = numpy.array([0.2, 0.3, 0.4], numpy.float32)
    clf = caffe.Classifier(model, weights, image_dims=(8, 9), mean=mean, raw_scale=2.0,
                           channel_swap=(2, 1, 0))
    ims = images(3, (10, 12, 3))                   # resized to 8 x 9 first
    got = clf.predict(ims)
    assert got.shape == (3, 10)
    for im, row in zip(ims, got):
        r = caffe_io.resize_image(im, (8, 9))
        corners = [r[y:y + 6, x:x + 6] for y in (0, 2) for x in (0, 3)]
        centre = r[1:7, 1:7]                         # (8 - 6) / 2, int((9 - 6) / 2)
        crops = corners + [centre]
        crops += [c[:, ::-1] for c in crops]         # the mirrors
        want = numpy.mean([forward_one(model, weights, preprocess(c, mean, 2.0, (2, 1, 0)))
                           for c in crops], axis=0)
        numpy.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-7)


def test_classifier_center_only_and_defaults(small):
    model, weights = small
    clf = caffe.Classifier(model, weights)           # image_dims default: the input's
    assert tuple(clf.image_dims) == (6, 6)
    ims = images(5, (9, 7, 3), seed=1)               # more than a batch of 4
    got = clf.predict(ims, oversample=False)
    for im, row in zip(ims, got):
        x = caffe_io.resize_image(im, (6, 6)).transpose(2, 0, 1)
        numpy.testing.assert_allclose(row, forward_one(model, weights, x), rtol=1e-5,
                                      atol=1e-7)


def test_classifier_errors(small):
    model, weights = small
    with pytest.raises(CaffeError, match=r"image_dims \(4, 4\) smaller than the net's input"):
        caffe.Classifier(model, weights, image_dims=(4, 4))
    clf = caffe.Classifier(model, weights)
    with pytest.raises(CaffeError, match="no images"):
        clf.predict([])
    with pytest.raises(CaffeError, match=r"image 1 has shape \(6, 6\); expected H x W x K"):
        clf.predict([numpy.zeros((6, 6, 3)), numpy.zeros((6, 6))])


def cifar_classifier(**kw):
    if not CIFAR.is_dir():
        pytest.skip(f"test material not found at {CIFAR}")
    return caffe.Classifier(str(CIFAR / "cifar10_quick_deploy_bvlc_v2.prototxt"),
                            str(CIFAR / "cifar10_quick_iter_5000.caffemodel"),
                            mean=numpy.full(3, 120.0), raw_scale=255,
                            channel_swap=(2, 1, 0), **kw)


def test_classifier_on_real_cifar_images():
    # The fixtures' CIFAR-10 quick model, its images read as pycaffe reads them (RGB in
    # [0, 1]) and taken to Caffe's BGR 0..255 minus 120 by the Classifier.
    clf = cifar_classifier()
    names = ("cat10.png", "dog10.png", "truck10.png")
    probs = clf.predict([caffe.io.load_image(str(CIFAR / "images" / n)) for n in names],
                        oversample=False)
    assert list(probs.argmax(1)) == [3, 5, 9]        # CIFAR-10's cat, dog, truck
    cv2 = pytest.importorskip("cv2")
    raw = numpy.stack([cv2.imread(str(CIFAR / "images" / n)).transpose(2, 0, 1) - 120.0
                       for n in names]).astype(numpy.float32)
    net = caffe.Net(str(CIFAR / "cifar10_quick_deploy_bvlc_v2.prototxt"), caffe.TEST,
                    weights=str(CIFAR / "cifar10_quick_iter_5000.caffemodel"))
    net.blobs["data"].reshape(3, 3, 32, 32)
    # load_image's 1/255 then raw_scale 255 round in float32: ~1e-5 of the probabilities
    numpy.testing.assert_allclose(probs, net.forward(data=raw)["prob"], atol=1e-5)


def test_set_mean_resizes_for_the_classify_default():
    # classify.py's default: the 3 x 256 x 256 ILSVRC mean against a 227 x 227 input.
    mean_file = FIXTURES / "bvlc" / "python" / "caffe" / "imagenet" / "ilsvrc_2012_mean.npy"
    if not mean_file.exists():
        pytest.skip(f"test material not found at {mean_file}")
    mean = numpy.load(mean_file)
    t = caffe.io.Transformer({"data": (1, 3, 227, 227)})
    t.set_mean("data", mean)
    assert t.mean["data"].shape == (3, 227, 227)
    # the per-channel averages survive the resize (to 0.1 of 0..255)
    numpy.testing.assert_allclose(t.mean["data"].mean((1, 2)), mean.mean((1, 2)), atol=0.1)


def test_classify_tool(small, tmp_path, capsys):
    model, weights = small
    folder = tmp_path / "images"
    folder.mkdir()
    cv2 = pytest.importorskip("cv2")
    rng = numpy.random.default_rng(3)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (9, 9, 3), numpy.uint8))
    mean = tmp_path / "mean.npy"
    numpy.save(mean, numpy.full((3, 8, 8), 100.0))   # resized to 6 x 6 by set_mean
    out = tmp_path / "out"
    status = classify_tool.main([str(folder), str(out), "--model_def", model,
                                 "--pretrained_model", weights, "--mean_file", str(mean),
                                 "--images_dim", "7,7", "--ext", "png"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "CPU mode" in printed and "Classifying 3 inputs." in printed
    got = numpy.load(tmp_path / "out.npy")           # numpy.save's name
    clf = caffe.Classifier(model, weights, image_dims=(7, 7), mean=numpy.full((3, 8, 8), 100.0),
                           raw_scale=255, channel_swap=(2, 1, 0))
    ims = [caffe.io.load_image(str(folder / f"{i}.png")) for i in range(3)]
    numpy.testing.assert_allclose(got, clf.predict(ims), rtol=1e-6)


def test_classify_tool_errors(small, tmp_path, capsys, monkeypatch):
    model, weights = small
    monkeypatch.chdir(tmp_path)
    status = classify_tool.main(["x.jpg", "out.npy"])
    assert status == 1
    err = capsys.readouterr().err
    assert "--model_def not given" in err and "models/bvlc_reference_caffenet" in err
    status = classify_tool.main(["missing.jpg", "out.npy", "--model_def", model,
                                 "--pretrained_model", weights, "--mean_file", ""])
    assert status == 1 and "missing.jpg: no such image" in capsys.readouterr().err
    status = classify_tool.main(["x.jpg", "out.npy", "--model_def", model,
                                 "--pretrained_model", weights, "--mean_file", "nope.npy"])
    assert status == 1 and "nope.npy: cannot read the mean" in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()


# --- Detector -------------------------------------------------------------------------------

def test_detector_windows_without_context(small, tmp_path):
    model, weights = small
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "im.png"
    cv2.imwrite(str(path), numpy.random.default_rng(4).integers(0, 256, (20, 16, 3),
                                                                 numpy.uint8))
    det = caffe.Detector(model, weights, raw_scale=255, channel_swap=(2, 1, 0))
    windows = numpy.array([[0, 0, 10, 8], [5, 3, 20, 16]])
    found = det.detect_windows([(str(path), windows)])
    assert [d["filename"] for d in found] == [str(path)] * 2
    im = caffe.io.load_image(str(path))
    for d, w in zip(found, windows):
        numpy.testing.assert_array_equal(d["window"], w)
        crop = caffe_io.resize_image(im[w[0]:w[2], w[1]:w[3]], (6, 6))
        x = preprocess(crop, numpy.zeros(3), 255, (2, 1, 0))
        numpy.testing.assert_allclose(d["prediction"], forward_one(model, weights, x),
                                      rtol=1e-5, atol=1e-7)


def test_detector_context_padding_is_the_mean(small):
    # R-CNN's context: a window at the image corner grows past the image; that part is
    # filled with the mean in raw image space, which preprocessing takes back to 0.
    model, weights = small
    mean = numpy.array([10.0, 20.0, 30.0])
    det = caffe.Detector(model, weights, mean=mean, raw_scale=255, channel_swap=(2, 1, 0),
                         context_pad=1)
    numpy.testing.assert_allclose(det.crop_mean[0, 0], [30 / 255, 20 / 255, 10 / 255])
    im = numpy.random.default_rng(5).random((30, 30, 3)).astype(numpy.float32)
    crop = det.crop(im, [0, 0, 11, 11])              # 12 x 12 box grown by 6/4: 18 x 18
    assert crop.shape == (6, 6, 3)
    x = det.transformer.preprocess("data", crop)
    numpy.testing.assert_allclose(x[:, 0, :], 0, atol=1e-5)   # top row: padding
    numpy.testing.assert_allclose(x[:, :, 0], 0, atol=1e-5)   # left column: padding
    assert numpy.abs(x[:, 2:, 2:]).min() > 0         # the image
    inner = det.crop(im, [9, 9, 20, 20])             # inside: the grown box, resized
    grown = caffe_io.resize_image(im[6:24, 6:24], (6, 6))
    numpy.testing.assert_allclose(inner, grown, rtol=1e-6)


def test_detect_tool_list_mode(small, tmp_path, capsys):
    model, weights = small
    cv2 = pytest.importorskip("cv2")
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), numpy.random.default_rng(len(name)).integers(
            0, 256, (16, 16, 3), numpy.uint8))
    windows = tmp_path / "windows.csv"
    windows.write_text("filename, xmin, ymin, xmax, ymax\n"
                       f"{tmp_path / 'a.png'}, 0, 0, 8, 8\n"
                       f"{tmp_path / 'b.png'}, 2, 3, 16, 15\n"
                       f"{tmp_path / 'a.png'}, 4, 4, 16, 16\n")
    flags = ["--crop_mode", "list", "--model_def", model, "--pretrained_model", weights,
             "--mean_file", "", "--context_pad", "0"]
    assert detect_tool.main([str(windows), str(tmp_path / "out.csv")] + flags) == 0
    assert "Processed 3 windows" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    # grouped by image in first-seen order, as BVLC's detect.py groups them
    assert [(r["filename"][-5:], r["ymin"], r["xmin"]) for r in rows] == \
        [("a.png", "0", "0"), ("a.png", "4", "4"), ("b.png", "3", "2")]
    probs = numpy.array([[float(r[f"class{i}"]) for i in range(10)] for r in rows])
    numpy.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert detect_tool.main([str(windows), str(tmp_path / "out.h5")] + flags) == 0
    with h5py.File(tmp_path / "out.h5") as h5:
        numpy.testing.assert_allclose(h5["prediction"][()], probs, rtol=1e-6)
        assert h5["window"][()].tolist()[2] == [3, 2, 15, 16]


def test_detect_tool_errors(small, tmp_path, capsys):
    model, weights = small
    names = tmp_path / "images.txt"
    names.write_text("a.png\n")
    flags = ["--model_def", model, "--pretrained_model", weights, "--mean_file", ""]
    assert detect_tool.main([str(names), str(tmp_path / "o.h5")] + flags) == 1
    assert "selective_search_ijcv_with_python" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,xmin,ymin\nx.png,1,2\n")
    assert detect_tool.main([str(bad), str(tmp_path / "o.h5"), "--crop_mode", "list"]
                            + flags) == 1
    assert "bad.csv:2: expected filename,xmin,ymin,xmax,ymax" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        detect_tool.main([str(tmp_path / "x.json"), "o.h5"])
    assert "unknown input file type" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["classify", "detect"])
def test_scripts_show_bvlc_flags(name):
    import os
    import subprocess
    import sys
    from conftest import REPO
    script = REPO / "tools" / name
    assert os.access(script, os.X_OK), f"{script} is not executable"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--model_def", "--pretrained_model", "--mean_file", "--raw_scale",
                 "--channel_swap", "--gpu"):
        assert flag in result.stdout


def test_classifier_and_detector_can_refuse_python_layers(small, tmp_path):
    model, weights = small
    untrusted = tmp_path / "untrusted.prototxt"
    untrusted.write_text(open(model).read() +
                         'layer { name: "odd" type: "Python" bottom: "prob" top: "odd" '
                         'python_param { module: "never_imported_module" layer: "X" } }')
    for make in (caffe.Classifier, caffe.Detector):
        with pytest.raises(CaffeError, match="odd.*never_imported_module") as caught:
            make(str(untrusted), weights, allow_python_layers=False)
        assert "could not be imported" not in str(caught.value)   # refused, not tried
