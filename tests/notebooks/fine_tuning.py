"""BVLC's 02-fine-tuning notebook as a script: CaffeNet's ImageNet weights carried
into a "style" net on ImageData, its classifier trained with the other layers
frozen (lr_mult 0), then end to end, each against a net trained from scratch.

    python -m pycaffe_lite.run fine_tuning.py WORKDIR MEAN_NPY IMAGE [IMAGE ...]
        [--niter N] [--batch B] [--crop C] [--new-size S] [--width-div D]

The images (any few) get labels 0-4 in turn.  ImageNet weights are not needed: an
ImageNet CaffeNet (DummyData input) is filled at random and saved, and stands in
for bvlc_reference_caffenet.caffemodel.  --crop / --new-size / --width-div shrink
the net (defaults: the notebook's 227 / 256 / CaffeNet's widths).
"""
import argparse
import os

import numpy as np

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2

from narrow import fill_random

NUM_STYLE_LABELS = 5
WIDTH = 1
WORKDIR = '.'

weight_param = dict(lr_mult=1, decay_mult=1)
bias_param = dict(lr_mult=2, decay_mult=0)
learned_param = [weight_param, bias_param]
frozen_param = [dict(lr_mult=0)] * 2


def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1, param=learned_param,
              weight_filler=dict(type='gaussian', std=0.01),
              bias_filler=dict(type='constant', value=0.1)):
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout // WIDTH,
                         pad=pad, group=group, param=param, weight_filler=weight_filler,
                         bias_filler=bias_filler)
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout, param=learned_param,
            weight_filler=dict(type='gaussian', std=0.005),
            bias_filler=dict(type='constant', value=0.1)):
    fc = L.InnerProduct(bottom, num_output=nout // WIDTH, param=param,
                        weight_filler=weight_filler, bias_filler=bias_filler)
    return fc, L.ReLU(fc, in_place=True)


def max_pool(bottom, ks, stride=1):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


_count = [0]


def write_net(proto, kind):
    _count[0] += 1
    path = os.path.join(WORKDIR, '%s_%d.prototxt' % (kind, _count[0]))
    with open(path, 'w') as f:
        f.write(str(proto))
    return path


def caffenet(data, label=None, train=True, num_classes=1000, classifier_name='fc8',
             learn_all=False):
    """CaffeNet as in models/bvlc_reference_caffenet/train_val.prototxt; its file name."""
    n = caffe.NetSpec()
    n.data = data
    param = learned_param if learn_all else frozen_param
    n.conv1, n.relu1 = conv_relu(n.data, 11, 96, stride=4, param=param)
    n.pool1 = max_pool(n.relu1, 3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2, n.relu2 = conv_relu(n.norm1, 5, 256, pad=2, group=2, param=param)
    n.pool2 = max_pool(n.relu2, 3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    n.conv3, n.relu3 = conv_relu(n.norm2, 3, 384, pad=1, param=param)
    n.conv4, n.relu4 = conv_relu(n.relu3, 3, 384, pad=1, group=2, param=param)
    n.conv5, n.relu5 = conv_relu(n.relu4, 3, 256, pad=1, group=2, param=param)
    n.pool5 = max_pool(n.relu5, 3, stride=2)
    n.fc6, n.relu6 = fc_relu(n.pool5, 4096, param=param)
    if train:
        n.drop6 = fc7input = L.Dropout(n.relu6, in_place=True)
    else:
        fc7input = n.relu6
    n.fc7, n.relu7 = fc_relu(fc7input, 4096, param=param)
    if train:
        n.drop7 = fc8input = L.Dropout(n.relu7, in_place=True)
    else:
        fc8input = n.relu7
    fc8 = L.InnerProduct(fc8input, num_output=num_classes, param=learned_param)
    n.__setattr__(classifier_name, fc8)
    if not train:
        n.probs = L.Softmax(fc8)
    if label is not None:
        n.label = label
        # propagate_down: no gradient for the labels (Caffe would refuse one anyway)
        n.loss = L.SoftmaxWithLoss(fc8, n.label, propagate_down=[True, False])
        n.acc = L.Accuracy(fc8, n.label)
    return write_net(n.to_proto(), 'caffenet')


def solver(train_net_path, test_net_path=None, base_lr=0.001):
    s = caffe_pb2.SolverParameter()
    s.train_net = train_net_path
    if test_net_path is not None:
        s.test_net.append(test_net_path)
        s.test_interval = 1000
        s.test_iter.append(100)
    s.iter_size = 1
    s.max_iter = 100000
    s.type = 'SGD'
    s.base_lr = base_lr
    s.lr_policy = 'step'
    s.gamma = 0.1
    s.stepsize = 20000
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.display = 1000
    s.snapshot = 10000
    s.snapshot_prefix = os.path.join(WORKDIR, 'finetune_flickr_style')
    s.solver_mode = caffe_pb2.SolverParameter.GPU  # set_mode_cpu() below wins
    return write_net(s, 'solver')


def deprocess_net_image(image):
    image = image.copy()
    image = image[::-1]
    image = image.transpose(1, 2, 0)
    image += [123, 117, 104]
    image[image < 0], image[image > 255] = 0, 255
    return np.require(np.round(image), dtype=np.uint8)


def main():
    global WIDTH, WORKDIR
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("mean")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--niter", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--crop", type=int, default=227)
    parser.add_argument("--new-size", type=int, default=256)
    parser.add_argument("--width-div", type=int, default=1)
    parser.add_argument("--base-lr", type=float, default=0.001)
    args = parser.parse_args()
    WIDTH, WORKDIR = args.width_div, os.path.abspath(args.workdir)
    caffe.set_mode_cpu()

    # the style data: "path label" lines, labels 0-4 in turn; the ImageNet mean as a
    # binaryproto, resized to the images' size (the crop is taken from both)
    for split in ('train', 'test'):
        with open(os.path.join(WORKDIR, split + '.txt'), 'w') as f:
            for i, image in enumerate(args.images):
                f.write('%s %d\n' % (os.path.abspath(image), i % NUM_STYLE_LABELS))
    mean = np.load(args.mean)
    if args.new_size != mean.shape[1]:
        mean = caffe.io.resize_image(mean.transpose(1, 2, 0) / 255.,
                                     (args.new_size, args.new_size)).transpose(2, 0, 1) * 255
    mean_file = os.path.join(WORKDIR, 'imagenet_mean.binaryproto')
    with open(mean_file, 'wb') as f:
        f.write(caffe.io.array_to_blobproto(mean[np.newaxis]).SerializeToString())

    # the "pretrained" ImageNet weights
    dummy_data = L.DummyData(shape=dict(dim=[1, 3, args.crop, args.crop]))
    imagenet_net_filename = caffenet(data=dummy_data, train=False)
    pretrained = caffe.Net(imagenet_net_filename, caffe.TEST)
    fill_random(pretrained, input_scale=64.)  # mean-subtracted pixels: std ~64
    for blob in pretrained.params['fc7']:
        # fc7 features of rms ~0.5 (not ~1.5): softmax regression on them is then well
        # conditioned at the notebook's lr 0.001 with momentum 0.9
        blob.data[...] *= 0.3
    weights = os.path.join(WORKDIR, 'bvlc_reference_caffenet.caffemodel')
    pretrained.save(weights)
    del pretrained
    assert os.path.exists(weights)

    imagenet_net = caffe.Net(imagenet_net_filename, weights, caffe.TEST)

    def style_net(train=True, learn_all=False, subset=None):
        if subset is None:
            subset = 'train' if train else 'test'
        source = os.path.join(WORKDIR, '%s.txt' % subset)
        transform_param = dict(mirror=train, crop_size=args.crop, mean_file=mean_file)
        style_data, style_label = L.ImageData(
            transform_param=transform_param, source=source, batch_size=args.batch,
            new_height=args.new_size, new_width=args.new_size, ntop=2)
        return caffenet(data=style_data, label=style_label, train=train,
                        num_classes=NUM_STYLE_LABELS, classifier_name='fc8_flickr',
                        learn_all=learn_all)

    untrained_style_net = caffe.Net(style_net(train=False, subset='train'), weights,
                                    caffe.TEST)
    untrained_style_net.forward()
    style_data_batch = untrained_style_net.blobs['data'].data.copy()
    style_label_batch = np.array(untrained_style_net.blobs['label'].data, dtype=np.int32)
    assert style_data_batch.shape == (args.batch, 3, args.crop, args.crop)
    expected_labels = [i % NUM_STYLE_LABELS for i in range(len(args.images))]
    expected_labels = (expected_labels * args.batch)[:args.batch]
    assert list(style_label_batch) == expected_labels, style_label_batch

    def disp_preds(net, image, k=5):
        net.blobs['data'].data[0, ...] = image
        probs = net.forward(start='conv1')['probs'][0]
        top_k = (-probs).argsort()[:k]
        return probs, top_k

    batch_index = min(8, args.batch - 1)
    image = style_data_batch[batch_index]
    shown = deprocess_net_image(image)
    assert shown.shape == (args.crop, args.crop, 3) and shown.dtype == np.uint8
    probs, top_k = disp_preds(imagenet_net, image)
    assert probs.shape == (1000,)
    probs, top_k = disp_preds(untrained_style_net, image)
    assert probs.shape == (NUM_STYLE_LABELS,) and len(top_k) == 5
    # the notebook's own check: the same features up to fc7, from the ImageNet weights
    diff = untrained_style_net.blobs['fc7'].data[0] - imagenet_net.blobs['fc7'].data[0]
    error = (diff ** 2).sum()
    # the notebook asks error < 1e-8 of CaffeNet's trained fc7; the random weights'
    # fc7 is bigger (and float32 rounding differs from batch 1 to batch N): relative
    scale = (imagenet_net.blobs['fc7'].data[0] ** 2).sum()
    print('fc7 error', error, 'relative', error / scale)
    assert scale > 0 and error < 1e-10 * scale, (error, scale)
    del untrained_style_net

    def run_solvers(niter, solvers, disp_interval=10):
        blobs = ('loss', 'acc')
        loss, acc = ({name: np.zeros(niter) for name, _ in solvers} for _ in blobs)
        for it in range(niter):
            for name, s in solvers:
                s.step(1)
                loss[name][it], acc[name][it] = (s.net.blobs[b].data.copy() for b in blobs)
            if it % disp_interval == 0 or it + 1 == niter:
                loss_disp = '; '.join('%s: loss=%.3f, acc=%2d%%' % (
                    n, loss[n][it], np.round(100 * acc[n][it])) for n, _ in solvers)
                print('%3d) %s' % (it, loss_disp))
        weights = {}
        for name, s in solvers:
            filename = 'weights.%s.caffemodel' % name.replace(' ', '_').replace(',', '')
            weights[name] = os.path.join(WORKDIR, filename)
            s.net.save(weights[name])
        return loss, acc, weights

    niter = args.niter
    style_solver = caffe.get_solver(solver(style_net(train=True), base_lr=args.base_lr))
    style_solver.net.copy_from(weights)
    scratch_style_solver = caffe.get_solver(solver(style_net(train=True),
                                                   base_lr=args.base_lr))
    before = {name: [b.data.copy() for b in blobs]
              for name, blobs in style_solver.net.params.items()}
    for name in ('conv1', 'fc7'):
        assert np.array_equal(before[name][0], imagenet_net.params[name][0].data), name
    print('Running solvers for %d iterations...' % niter)
    solvers = [('pretrained', style_solver), ('scratch', scratch_style_solver)]
    loss, acc, trained = run_solvers(niter, solvers)
    print('Done.')
    for name, blobs in style_solver.net.params.items():
        changed = any(not np.array_equal(b.data, old) for b, old in zip(blobs, before[name]))
        assert changed == (name == 'fc8_flickr'), (name, changed)  # lr_mult 0 elsewhere
    # frozen below fc8: no gradient reaches them (Caffe skips their backward)
    assert not style_solver.net.blobs['fc7'].diff.any()
    assert not style_solver.net.params['conv1'][0].diff.any()
    for name, _ in solvers:
        assert np.isfinite(loss[name]).all() and ((0 <= acc[name]) & (acc[name] <= 1)).all()
    del style_solver, scratch_style_solver, solvers

    def eval_style_net(weights, test_iters=2):
        test_net = caffe.Net(style_net(train=False), weights, caffe.TEST)
        accuracy = loss = 0
        for it in range(test_iters):
            out = test_net.forward()
            accuracy += out['acc']
            loss += out['loss']  # not in the notebook: the loss tells more on 5 classes
        accuracy /= test_iters
        test_net.loss = float(loss / test_iters)
        return test_net, float(accuracy)

    untrained = os.path.join(WORKDIR, 'untrained.caffemodel')
    caffe.Net(style_net(train=False), weights, caffe.TEST).save(untrained)
    untrained_loss = eval_style_net(untrained)[0].loss
    test_net, accuracy = eval_style_net(trained['pretrained'])
    print('Test loss, classifier trained on the ImageNet features: %.3f -> %.3f'
          % (untrained_loss, test_net.loss))
    # Not asserted: random "ImageNet" features separate a few images poorly, and 10
    # steps at lr 0.001 took the test loss from 1.609 to 1.596-1.608 over 11 runs.
    print('Accuracy, trained from ImageNet initialization: %3.1f%%' % (100 * accuracy,))
    _, scratch_accuracy = eval_style_net(trained['scratch'])
    print('Accuracy, trained from   random initialization: %3.1f%%' % (100 * scratch_accuracy,))
    assert np.array_equal(test_net.params['fc8_flickr'][0].data,
                          caffe.Net(style_net(train=False), trained['pretrained'],
                                    caffe.TEST).params['fc8_flickr'][0].data)

    end_to_end_net = style_net(train=True, learn_all=True)
    style_solver = caffe.get_solver(solver(end_to_end_net, base_lr=args.base_lr))
    style_solver.net.copy_from(trained['pretrained'])
    scratch_style_solver = caffe.get_solver(solver(end_to_end_net, base_lr=args.base_lr))
    scratch_style_solver.net.copy_from(trained['scratch'])
    conv1 = style_solver.net.params['conv1'][0].data.copy()
    solvers = [('pretrained, end-to-end', style_solver),
               ('scratch, end-to-end', scratch_style_solver)]
    _, _, finetuned_weights = run_solvers(niter, solvers)
    assert not np.array_equal(style_solver.net.params['conv1'][0].data, conv1)
    assert style_solver.net.blobs['fc7'].diff.any()  # learn_all: gradients reach down
    del style_solver, scratch_style_solver, solvers

    test_iters = 2
    test_net, accuracy = eval_style_net(finetuned_weights['pretrained, end-to-end'],
                                        test_iters)
    print('Accuracy, finetuned from ImageNet initialization: %3.1f%%' % (100 * accuracy,))
    batch_index = 1
    image = test_net.blobs['data'].data[batch_index]
    position = ((test_iters - 1) * args.batch + batch_index) % len(args.images)
    assert test_net.blobs['label'].data[batch_index] == position % NUM_STYLE_LABELS
    probs, top_k = disp_preds(test_net, image)
    assert abs(probs.sum() - 1) < 1e-4
    probs, top_k = disp_preds(imagenet_net, image)
    print('fine_tuning: OK, accuracy %.2f (pretrained) %.2f (scratch)'
          % (accuracy, scratch_accuracy))


if __name__ == '__main__':
    main()
