"""BVLC's pascal-multilabel-with-datalayer notebook as a script: a CaffeNet-shaped
multilabel net fed by a Python data layer (pascal_multilabel_datalayers.py, next to
this script), started from another net's weights, trained with SGDSolver.

    python -m pycaffe_lite.run pascal_multilabel.py WORKDIR [--pascal-root DIR]
        [--im-size S] [--batch-size B] [--width-div D] [--rounds R] [--steps K]

Without --pascal-root it writes a small fake VOC folder (coloured boxes, one colour
per class, with their XML annotations) under WORKDIR.  --width-div divides every
layer's width (1: CaffeNet's), so tests can train a small net in seconds.
"""
import argparse
import os
import os.path as osp

import cv2
import numpy as np

import caffe
from caffe import layers as L, params as P

import pascal_multilabel_datalayers as datalayers

WIDTH = 1


def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1):
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride,
                         num_output=nout // WIDTH, pad=pad, group=group)
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout):
    fc = L.InnerProduct(bottom, num_output=nout // WIDTH)
    return fc, L.ReLU(fc, in_place=True)


def max_pool(bottom, ks, stride=1):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def caffenet_body(n):
    n.conv1, n.relu1 = conv_relu(n.data, 11, 96, stride=4)
    n.pool1 = max_pool(n.relu1, 3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2, n.relu2 = conv_relu(n.norm1, 5, 256, pad=2, group=2)
    n.pool2 = max_pool(n.relu2, 3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    n.conv3, n.relu3 = conv_relu(n.norm2, 3, 384, pad=1)
    n.conv4, n.relu4 = conv_relu(n.relu3, 3, 384, pad=1, group=2)
    n.conv5, n.relu5 = conv_relu(n.relu4, 3, 256, pad=1, group=2)
    n.pool5 = max_pool(n.relu5, 3, stride=2)
    n.fc6, n.relu6 = fc_relu(n.pool5, 4096)
    n.drop6 = L.Dropout(n.relu6, in_place=True)
    n.fc7, n.relu7 = fc_relu(n.drop6, 4096)
    n.drop7 = L.Dropout(n.relu7, in_place=True)
    return n.drop7


def caffenet_multilabel(data_layer_params, datalayer):
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module='pascal_multilabel_datalayers', layer=datalayer,
                               ntop=2, param_str=str(data_layer_params))
    n.score = L.InnerProduct(caffenet_body(n), num_output=20)
    n.loss = L.SigmoidCrossEntropyLoss(n.score, n.label)
    return str(n.to_proto())


def reference_caffenet(im_size):
    """The stand-in for bvlc_reference_caffenet: the same body, filled at random (as if
    trained), a 1000-way fc8 and a DummyData input."""
    n = caffe.NetSpec()
    n.data = L.DummyData(shape=dict(dim=[1, 3, im_size, im_size]))
    n.fc8 = L.InnerProduct(caffenet_body(n), num_output=1000)
    proto = n.to_proto()
    for layer in proto.layer:
        param = {'Convolution': layer.convolution_param,
                 'InnerProduct': layer.inner_product_param}.get(layer.type)
        if param is not None:
            param.weight_filler.type, param.weight_filler.std = 'gaussian', 0.01
            param.bias_filler.type, param.bias_filler.value = 'constant', 0.1
    return str(proto)


class CaffeSolver:
    """A solver.prototxt from a dict of strings, as the notebook's tools.CaffeSolver."""

    def __init__(self, testnet_prototxt_path, trainnet_prototxt_path):
        self.sp = {
            'base_lr': '0.001', 'momentum': '0.9', 'test_iter': '100',
            'test_interval': '250', 'display': '25', 'snapshot': '2500',
            'snapshot_prefix': '"snapshot"', 'lr_policy': '"fixed"', 'gamma': '0.1',
            'weight_decay': '0.0005', 'train_net': '"%s"' % trainnet_prototxt_path,
            'test_net': '"%s"' % testnet_prototxt_path, 'max_iter': '100000',
            'test_initialization': 'false', 'average_loss': '25', 'iter_size': '1'}

    def write(self, filepath):
        with open(filepath, 'w') as f:
            for key, value in sorted(self.sp.items()):
                f.write('%s: %s\n' % (key, value))


COLOURS = np.array([[(37 * k) % 256, (91 * k + 40) % 256, (151 * k + 80) % 256]
                    for k in range(20)], dtype=np.uint8)


def write_fake_voc(root, counts, size=96, seed=0):
    """A VOC-layout folder: per image 1-3 boxes, each of its class's colour."""
    rng = np.random.RandomState(seed)
    for sub in ('ImageSets/Main', 'JPEGImages', 'Annotations'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    for split, count in counts.items():
        names = []
        for i in range(count):
            name = '%s_%04d' % (split, i)
            im = np.full((size, size, 3), 255, np.uint8)  # RGB
            objects = []
            for cls in rng.choice(20, rng.randint(1, 4), replace=False):
                x1, y1 = rng.randint(0, size // 2, 2)
                x2, y2 = x1 + rng.randint(size // 4, size // 2, 2)
                im[y1:y2, x1:x2] = COLOURS[cls]
                objects.append('<object><name>%s</name><bndbox><xmin>%d</xmin><ymin>%d'
                               '</ymin><xmax>%d</xmax><ymax>%d</ymax></bndbox></object>'
                               % (datalayers.CLASSES[cls], x1 + 1, y1 + 1, x2, y2))
            cv2.imwrite(osp.join(root, 'JPEGImages', name + '.jpg'), im[:, :, ::-1])
            with open(osp.join(root, 'Annotations', name + '.xml'), 'w') as f:
                f.write('<annotation><filename>%s.jpg</filename>%s</annotation>'
                        % (name, ''.join(objects)))
            names.append(name)
        with open(osp.join(root, 'ImageSets/Main', split + '.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')


def hamming_distance(gt, est):
    return sum([1 for (g, e) in zip(gt, est) if g == e]) / float(len(gt))


def check_accuracy(net, num_batches, batch_size):
    acc = 0.0
    for t in range(num_batches):
        net.forward()
        gts = net.blobs['label'].data
        ests = net.blobs['score'].data > 0
        for gt, est in zip(gts, ests):
            acc += hamming_distance(gt, est)
    return acc / (num_batches * batch_size)


def check_baseline_accuracy(net, num_batches, batch_size):
    acc = 0.0
    for t in range(num_batches):
        net.forward()
        gts = net.blobs['label'].data
        for gt in gts:  # the all-absent guess
            acc += hamming_distance(gt, np.zeros_like(gt))
    return acc / (num_batches * batch_size)


def main():
    global WIDTH
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--pascal-root", default=None)
    parser.add_argument("--im-size", type=int, default=227)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width-div", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--base-lr", default="0.0001")
    args = parser.parse_args()
    WIDTH = args.width_div
    workdir = args.workdir
    os.makedirs(workdir, exist_ok=True)
    pascal_root = args.pascal_root
    if pascal_root is None:
        pascal_root = osp.join(workdir, 'VOCfake')
        write_fake_voc(pascal_root, {'train': 2 * args.batch_size, 'val': args.batch_size})
    im_shape = [args.im_size, args.im_size]
    caffe.set_mode_cpu()

    # the pretrained weights this notebook starts from
    reference_path = osp.join(workdir, 'reference_caffenet.prototxt')
    with open(reference_path, 'w') as f:
        f.write(reference_caffenet(args.im_size))
    reference = caffe.Net(reference_path, caffe.TEST)
    reference_weights = osp.join(workdir, 'reference_caffenet.caffemodel')
    reference.save(reference_weights)

    solverprototxt = CaffeSolver(trainnet_prototxt_path=osp.join(workdir, "trainnet.prototxt"),
                                 testnet_prototxt_path=osp.join(workdir, "valnet.prototxt"))
    solverprototxt.sp['display'] = "1"
    solverprototxt.sp['base_lr'] = args.base_lr
    solverprototxt.write(osp.join(workdir, 'solver.prototxt'))
    with open(osp.join(workdir, 'trainnet.prototxt'), 'w') as f:
        data_layer_params = dict(batch_size=args.batch_size, im_shape=im_shape, split='train',
                                 pascal_root=pascal_root)
        f.write(caffenet_multilabel(data_layer_params, 'PascalMultilabelDataLayerSync'))
    with open(osp.join(workdir, 'valnet.prototxt'), 'w') as f:
        data_layer_params = dict(batch_size=args.batch_size, im_shape=im_shape, split='val',
                                 pascal_root=pascal_root)
        f.write(caffenet_multilabel(data_layer_params, 'PascalMultilabelDataLayerSync'))

    solver = caffe.SGDSolver(osp.join(workdir, 'solver.prototxt'))
    assert not solver.net.params['conv1'][0].data.any()  # no fillers: Caffe's zeros
    solver.net.copy_from(reference_weights)
    for name in ('conv1', 'conv2', 'conv5', 'fc6', 'fc7'):
        for mine, theirs in zip(solver.net.params[name], reference.params[name]):
            assert np.array_equal(mine.data, theirs.data), name
    assert not solver.net.params['score'][0].data.any()  # fc8 was 1000-way: not copied
    solver.test_nets[0].share_with(solver.net)
    solver.step(1)

    net = solver.net
    B, S = args.batch_size, args.im_size
    assert net.blobs['data'].data.shape == (B, 3, S, S), net.blobs['data'].data.shape
    assert net.blobs['label'].data.shape == (B, 20)
    assert net.layers[0].type == 'Python'
    # the first batch is the first images in list order: check image and labels
    first = 'train_0000'
    anns = datalayers.load_pascal_annotation(first, pascal_root)
    gtlist = net.blobs['label'].data[0].astype(int)
    assert sorted(np.where(gtlist)[0] + 1) == sorted(anns['gt_classes']), (gtlist, anns)
    transformer = datalayers.SimpleTransformer()
    shown = transformer.deprocess(net.blobs['data'].data[0].copy())
    expected = caffe.io.resize_image(caffe.io.load_image(
        osp.join(pascal_root, 'JPEGImages', first + '.jpg')), im_shape) * 255
    err = min(np.abs(shown - expected).mean(), np.abs(shown - expected[:, ::-1]).mean())
    assert err < 1.0, err  # the same image, up to the random flip and uint8 rounding
    print('GT: {}'.format(np.asarray(datalayers.CLASSES)[np.where(gtlist)]))
    # share_with: after the update the test net still sees the train net's weights
    for name in ('conv1', 'fc7', 'score'):
        assert np.array_equal(solver.test_nets[0].params[name][0].data,
                              net.params[name][0].data), name
    assert net.params['score'][0].data.any(), "score got no update"

    losses = []
    for itt in range(args.rounds):
        round_loss = []
        for _ in range(args.steps):
            solver.step(1)
            round_loss.append(float(net.blobs['loss'].data))
        losses.append(np.mean(round_loss))
        accuracy = check_accuracy(solver.test_nets[0], 1, args.batch_size)
        assert 0 <= accuracy <= 1
        print('itt:{:3d}'.format((itt + 1) * args.steps), 'loss:{:.4f}'.format(losses[-1]),
              'accuracy:{0:.4f}'.format(accuracy))
    baseline = check_baseline_accuracy(solver.test_nets[0], 1, args.batch_size)
    # the val labels from the XML files: the baseline is exact
    density = np.mean([len(set(datalayers.load_pascal_annotation(
        'val_%04d' % i, pascal_root)['gt_classes'])) / 20. for i in range(args.batch_size)])
    print('Baseline accuracy:{0:.4f}'.format(baseline))
    assert abs(baseline - (1 - density)) < 1e-9, (baseline, density)
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    print('pascal_multilabel: OK, loss {:.4f} -> {:.4f}, accuracy {:.4f}, baseline {:.4f}'
          .format(losses[0], losses[-1], accuracy, baseline))


if __name__ == '__main__':
    main()
