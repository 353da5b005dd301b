#!/usr/bin/env python3
"""`make demo`: pycaffe_lite end to end on data it makes itself.

1. Draws 6,000 digit images with OpenCV's fonts (random font, size, stroke,
   position and noise) and stores them as Caffe Datum records in two LMDBs,
   exactly as `convert_imageset` would.
2. Fits a softmax classifier with the net's own forward/backward (plain
   gradient descent through the Python API), copies it into a Caffe test net
   (Data + InnerProduct + SoftmaxWithLoss + Accuracy) and saves a standard
   binary .caffemodel.
3. Runs `caffe_lite test` and `caffe_lite time` on it, printing Caffe's log.

Nothing is downloaded; everything lands in ./demo_out (or the folder given).
"""
import os
import subprocess
import sys

import cv2
import lmdb
import numpy

import pycaffe_lite as caffe

FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
         cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX]

NET = """name: "DigitsLinear"
layer {{ name: "digits" type: "Data" top: "data" top: "label"
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{source}" batch_size: 100 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 10 }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


TRAIN_NET = """name: "DigitsLinearFit"
layer {{ name: "data" type: "Input" top: "data" top: "label"
  input_param {{ shape {{ dim: {n} dim: 1 dim: 28 dim: 28 }} shape {{ dim: {n} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 10 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


def draw_digits(count, rs):
    images = numpy.zeros((count, 28, 28), numpy.uint8)
    labels = rs.randint(0, 10, count)
    for image, label in zip(images, labels):
        font = FONTS[rs.randint(len(FONTS))]
        scale = rs.uniform(0.7, 1.0) * (1.6 if font == cv2.FONT_HERSHEY_PLAIN else 0.9)
        thickness = int(rs.randint(1, 3))
        (w, h), _ = cv2.getTextSize(str(label), font, scale, thickness)
        x = int(numpy.clip((28 - w) / 2 + rs.randint(-3, 4), 0, 27))
        y = int(numpy.clip((28 + h) / 2 + rs.randint(-3, 4), 1, 27))
        cv2.putText(image, str(label), (x, y), font, scale, 255, thickness, cv2.LINE_AA)
    noise = rs.normal(0, 20, images.shape)
    return numpy.clip(images + noise, 0, 255).astype(numpy.uint8), labels


def write_lmdb(path, images, labels):
    env = lmdb.open(path, map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(images, labels)):
            datum = caffe.io.array_to_datum(image[None], int(label))
            txn.put(b"%08d" % i, datum.SerializeToString())
    env.close()


def main(out="demo_out"):
    os.makedirs(out, exist_ok=True)
    rs = numpy.random.RandomState(0)
    train_x, train_y = draw_digits(5000, rs)
    test_x, test_y = draw_digits(1000, rs)
    test_db = os.path.join(out, "digits_test_lmdb")
    if not os.path.exists(test_db):
        write_lmdb(test_db, test_x, test_y)
    print(f"wrote {len(test_x)} test digits to {test_db}")

    # Fit the classifier with pycaffe_lite's own forward/backward: full-batch
    # gradient descent with momentum on a softmax regression net.
    train = os.path.join(out, "digits_train.prototxt")
    with open(train, "w") as f:
        f.write(TRAIN_NET.format(n=len(train_x)))
    fit = caffe.Net(train, caffe.TRAIN)
    fit.blobs["data"].data[...] = train_x[:, None] / 256.0
    fit.blobs["label"].data[...] = train_y
    velocity = [numpy.zeros_like(p.data) for p in fit.params["ip"]]
    for step in range(300):
        fit.clear_param_diffs()
        loss = fit.forward_backward()
        for v, p in zip(velocity, fit.params["ip"]):
            v *= 0.9
            v -= 0.5 * p.diff
            p.data += v
        if step % 100 == 0:
            print(f"fitting: step {step}, training loss {loss:.4f}")

    model = os.path.join(out, "digits_linear.prototxt")
    with open(model, "w") as f:
        f.write(NET.format(source=test_db))
    net = caffe.Net(model, caffe.TEST)
    for mine, fitted in zip(net.params["ip"], fit.params["ip"]):
        mine.data[...] = fitted.data
    weights = os.path.join(out, "digits_linear.caffemodel")
    net.save(weights)
    print(f"saved the fitted classifier as {weights}")

    tool = [sys.executable, "-m", "pycaffe_lite.cli"]
    subprocess.run(tool + ["test", "--model", model, "--weights", weights,
                           "--iterations", "10"], check=True)
    subprocess.run(tool + ["time", "--model", model, "--iterations", "5"], check=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
