"""Real pretrained models give OpenCV DNN's outputs (and LeNet its MNIST accuracy).

Every output blob must match ``cv2.dnn.readNetFromCaffe`` within 1e-4 of the
output's largest absolute value.  Inputs are realistic (crops of the fixture
photos), prepared the way each model's own code prepares them; for equality
with OpenCV any consistent input would do.

When an output differs, the failure message names the first layer whose top
differs from OpenCV's (every layer run one by one on our side; OpenCV with
fusion off so that each layer has its own output).
"""
import gzip

import numpy
import pytest

from conftest import FIXTURES

cv2 = pytest.importorskip("cv2")
caffe = pytest.importorskip("pycaffe_lite")

RTOL = 1e-4
MODELS = FIXTURES / "models"


def fixture(*parts):
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixture {path} not found (is ../shared present? set PYCAFFE_LITE_SHARED)")
    return path


# --- running both frameworks --------------------------------------------------------

def ours(proto, weights, inputs):
    """Our outputs (NumPy copies) and the net, after reshaping inputs as pycaffe users do."""
    net = caffe.Net(str(proto), caffe.TEST, weights=str(weights))
    for name, value in inputs.items():
        net.blobs[name].reshape(*value.shape)
    net.reshape()
    outputs = net.forward(**inputs)
    return {name: numpy.array(value) for name, value in outputs.items()}, net


def last_writer(net, blob):
    """(layer name, top index) of the last layer writing ``blob`` (OpenCV names outputs so)."""
    found = None
    for record in net.records:
        name, tops = record.name, record.tops
        for j, top in enumerate(tops):
            if top == blob:
                found = (name, j)
    return found


def opencv(proto, weights, inputs, blob_names, net, fusion=True):
    """OpenCV's values of our ``blob_names``, looked up by their last writer layer."""
    cv_net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    cv_net.enableFusion(fusion)
    for name, value in inputs.items():
        cv_net.setInput(numpy.ascontiguousarray(value, numpy.float32), name)
    pins = [last_writer(net, blob) for blob in blob_names]
    layers = [layer for layer, _ in pins]
    results = cv_net.forwardAndRetrieve(layers)
    return {blob: numpy.array(results[k][j]) for k, (blob, (_, j)) in
            enumerate(zip(blob_names, pins))}


def relative_error(value, reference):
    value, reference = numpy.asarray(value, numpy.float64), numpy.asarray(reference, numpy.float64)
    scale = numpy.abs(reference).max() if reference.size else 0.0
    return numpy.abs(value - reference).max() / max(scale, 1e-30)


def first_divergence(proto, weights, inputs, rtol=RTOL):
    """Which layer's top first differs from OpenCV's: a one-paragraph diagnosis.

    Our side: layers forward one at a time, each top copied straight after its
    layer (in-place layers overwrite their input).  OpenCV's side: fusion off,
    every layer's output requested; the extra outputs of multi-top layers are
    fetched one call each, since OpenCV reuses their memory otherwise.
    """
    net = caffe.Net(str(proto), caffe.TEST, weights=str(weights))
    for name, value in inputs.items():
        net.blobs[name].reshape(*value.shape)
    net.reshape()
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    snapshots = []
    for i, record in enumerate(net.records):
        net.forward_range(i, i)
        snapshots.append((record.name, record.layer.type,
                          [numpy.array(record.top_blobs[j].data) for j in range(len(record.tops))]))

    def fresh_cv():
        cv_net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
        cv_net.enableFusion(False)
        for name, value in inputs.items():
            cv_net.setInput(numpy.ascontiguousarray(value, numpy.float32), name)
        return cv_net

    cv_net = fresh_cv()
    known = set(cv_net.getLayerNames())
    compared = [(n, t, tops) for n, t, tops in snapshots if n in known]
    theirs = dict(zip([n for n, _, _ in compared],
                      cv_net.forwardAndRetrieve([n for n, _, _ in compared])))
    for name, kind, tops in compared:
        for j, value in enumerate(tops):
            reference = theirs[name][j] if j == 0 else fresh_cv().forwardAndRetrieve([name])[0][j]
            reference = numpy.array(reference)
            if reference.size != value.size:
                return (f"layer '{name}' ({kind}) top {j}: shape {value.shape}, OpenCV "
                        f"{reference.shape}")
            err = relative_error(value.reshape(reference.shape), reference)
            if err > rtol:
                diff = numpy.abs(value.reshape(reference.shape) - reference)
                where = tuple(int(i) for i in numpy.unravel_index(diff.argmax(),
                                                                  reference.shape))
                return (f"first difference at layer '{name}' ({kind}) top {j} "
                        f"{reference.shape}: relative error {err:.3g}, at {where} ours "
                        f"{value.reshape(reference.shape)[where]:.6g}, OpenCV "
                        f"{reference[where]:.6g}")
    return "no single layer differs by more than the tolerance"


def compare_with_opencv(proto, weights, inputs, rtol=RTOL):
    """Assert every output blob equals OpenCV's; return our outputs."""
    proto, weights = fixture(proto), fixture(weights)
    outputs, net = ours(proto, weights, inputs)
    reference = opencv(proto, weights, inputs, list(outputs), net)
    failures = []
    for name, value in sorted(outputs.items()):
        expected = reference[name]
        if value.shape != expected.shape:
            failures.append(f"output '{name}': shape {value.shape}, OpenCV {expected.shape}")
            continue
        err = relative_error(value, expected)
        if not numpy.isfinite(err) or err > rtol:
            failures.append(f"output '{name}': relative error {err:.3g} > {rtol}")
    if failures:
        pytest.fail("; ".join(failures) + "\n" + first_divergence(proto, weights, inputs, rtol))
    return outputs


# --- inputs ---------------------------------------------------------------------------

def image(*parts):
    img = cv2.imread(str(fixture(*parts)))
    assert img is not None, f"cannot decode {parts}"
    return img


def nchw(img):
    return numpy.ascontiguousarray(img.transpose(2, 0, 1)[None], numpy.float32)


# Faces in mtcnn_prelu/test1.jpg (450x344): (x0, y0, x1, y1), found by eye.
MTCNN_FACES = [(80, 15, 160, 95), (290, 75, 370, 155)]
MTCNN_LANDMARKS = [(105, 50), (140, 50), (122, 66), (107, 80), (139, 80)]   # face 0


def mtcnn_input(patches, size=None):
    """MTCNN's preprocessing: RGB, (x - 127.5) / 128, transposed (Matlab order).

    Each patch is resized to ``size`` x ``size`` first, unless ``size`` is None.
    """
    out = []
    for patch in patches:
        if size is not None:
            patch = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB).astype(numpy.float32)
        out.append(((rgb - 127.5) * 0.0078125).transpose(2, 1, 0))
    return numpy.ascontiguousarray(numpy.stack(out), numpy.float32)


def mtcnn_crops():
    img = image("models", "mtcnn_prelu", "test1.jpg")
    return img, [img[y0:y1, x0:x1] for x0, y0, x1, y1 in MTCNN_FACES]


# --- the models ------------------------------------------------------------------------

def test_lenet_digits_match_opencv():
    images, _ = mnist(count=64)
    compare_with_opencv("models/lenet_mnist/lenet.prototxt",
                        "models/lenet_mnist/lenet_iter_10000.caffemodel",
                        {"data": images[:, None] * numpy.float32(0.00390625)})


@pytest.mark.parametrize("stage,size", [("det1", 12), ("det2", 24), ("det3", 48)])
def test_mtcnn_stage_matches_opencv(stage, size):
    _, crops = mtcnn_crops()
    outputs = compare_with_opencv(f"models/mtcnn_prelu/{stage}.prototxt",
                                  f"models/mtcnn_prelu/{stage}.caffemodel",
                                  {"data": mtcnn_input(crops, size)})
    prob = outputs["prob1"].reshape(len(crops), 2)
    assert (prob[:, 1] > 0.5).all(), f"{stage} does not see the faces: {prob}"


def test_mtcnn_det1_full_image_matches_opencv():
    """P-Net runs fully convolutional over a whole (scaled) image."""
    img, _ = mtcnn_crops()
    scaled = cv2.resize(img, (112, 86), interpolation=cv2.INTER_AREA)
    compare_with_opencv("models/mtcnn_prelu/det1.prototxt", "models/mtcnn_prelu/det1.caffemodel",
                        {"data": mtcnn_input([scaled])})


def test_mtcnn_det4_landmarks_match_opencv():
    img, _ = mtcnn_crops()
    x0, y0, x1, y1 = MTCNN_FACES[0]
    half = int(0.25 * max(x1 - x0, y1 - y0) / 2)
    patches = [img[y - half:y + half, x - half:x + half] for x, y in MTCNN_LANDMARKS]
    data = mtcnn_input(patches, 24)                     # 5 x 3 x 24 x 24
    compare_with_opencv("models/mtcnn_prelu/det4.prototxt", "models/mtcnn_prelu/det4.caffemodel",
                        {"data": data.reshape(1, 15, 24, 24)})


def retinaface_input(width, height):
    img = image("models", "retinaface_mnet25_bn", "test.jpg")
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return nchw(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))    # RetinaFace-Cpp: RGB, 0..255


def test_retinaface_reduced_size_matches_opencv():
    compare_with_opencv("models/retinaface_mnet25_bn/mnet.prototxt",
                        "models/retinaface_mnet25_bn/mnet.caffemodel",
                        {"data": retinaface_input(320, 240)})


def test_retinaface_full_size_matches_opencv():
    outputs = compare_with_opencv("models/retinaface_mnet25_bn/mnet.prototxt",
                                  "models/retinaface_mnet25_bn/mnet.caffemodel",
                                  {"data": retinaface_input(640, 480)})
    # Two faces in test.jpg: some anchor must be confident.
    assert outputs["face_rpn_cls_prob_reshape_stride8"][:, 2:].max() > 0.9


def test_yoloface50k_matches_opencv():
    img = image("models", "yoloface50k_landmark106_bn", "test.jpeg")
    data = nchw(cv2.resize(img, (56, 56), interpolation=cv2.INTER_AREA)) / numpy.float32(255)
    compare_with_opencv("models/yoloface50k_landmark106_bn/yoloface-50k.prototxt",
                        "models/yoloface50k_landmark106_bn/yoloface-50k.caffemodel",
                        {"data": data})


def test_landmark106_matches_opencv():
    img = image("models", "yoloface50k_landmark106_bn", "test.jpeg")
    face = img[90:330, 80:320]                          # the left face, by eye
    data = nchw(cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA)) / numpy.float32(255)
    compare_with_opencv("models/yoloface50k_landmark106_bn/landmark106.prototxt",
                        "models/yoloface50k_landmark106_bn/landmark106.caffemodel",
                        {"data": data})


# --- LeNet on the MNIST test set ------------------------------------------------------

def read_idx(path):
    """An idx file (gzip) as an array: magic (0, 0, dtype, ndim), big-endian dims, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\0\0" and raw[2] == 0x08, f"{path}: not an unsigned-byte idx file"
    ndim = raw[3]
    dims = numpy.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return numpy.frombuffer(raw, numpy.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist(count=None):
    images = read_idx(fixture("datasets", "mnist", "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(fixture("datasets", "mnist", "t10k-labels-idx1-ubyte.gz"))
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    return images[:count].astype(numpy.float32), labels[:count]


def lenet_accuracy_ours(images, labels, batch=1000):
    """Top-1 of LeNet through the pycaffe API, ``batch`` images per forward."""
    models = fixture("models", "lenet_mnist")
    net = caffe.Net(str(models / "lenet.prototxt"), caffe.TEST,
                    weights=str(models / "lenet_iter_10000.caffemodel"))
    net.blobs["data"].reshape(batch, 1, 28, 28)
    net.reshape()
    predictions = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch, None] * numpy.float32(0.00390625)
        assert len(chunk) == batch
        predictions.append(numpy.array(net.forward(data=chunk)["prob"]).argmax(axis=1))
    return int((numpy.concatenate(predictions) == labels).sum())


def lenet_accuracy_opencv(images, labels, batch=1000):
    models = fixture("models", "lenet_mnist")
    cv_net = cv2.dnn.readNetFromCaffe(str(models / "lenet.prototxt"),
                                      str(models / "lenet_iter_10000.caffemodel"))
    correct = 0
    for start in range(0, len(images), batch):
        cv_net.setInput(images[start:start + batch, None] * numpy.float32(0.00390625))
        correct += int((cv_net.forward().argmax(axis=1) == labels[start:start + batch]).sum())
    return correct


def test_lenet_mnist_top1_is_99_14_percent():
    images, labels = mnist()
    assert lenet_accuracy_opencv(images, labels) == 9914      # the fixture's own claim
    correct = lenet_accuracy_ours(images, labels)
    assert correct == 9914, f"top-1 {correct / 100:.2f}%, expected 99.14%"
