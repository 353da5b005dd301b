"""BVLC's 01-learning-lenet notebook as a script: LeNet written with NetSpec, trained
from Python on MNIST LMDBs, with the notebook's own test loop.

    python -m pycaffe_lite.run learning_lenet.py TRAIN_LMDB TEST_LMDB WORKDIR \
        [--niter N] [--test-interval K] [--test-iters T] [--min-accuracy A] [--gpu]
"""
import argparse
import os

import numpy as np

import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2


def lenet(lmdb, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50,
                            weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def custom_net(lmdb, batch_size):
    # the notebook's "define your own net": multiway logistic regression on the pixels
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.score = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def write_nets(make, name, args):
    """The notebook's train and test prototxts (batch 64 / the test batch) under mnist/."""
    paths = []
    for phase, lmdb, batch in (('train', args.train_lmdb, 64),
                               ('test', args.test_lmdb, args.test_batch)):
        paths.append(os.path.join('mnist', f'{name}_{phase}.prototxt'))
        with open(paths[-1], 'w') as f:
            f.write(str(make(lmdb, batch)))
    return paths


def run_custom(args):
    """The notebook's second half: a SolverParameter built in Python, caffe.get_solver."""
    train_path, test_path = write_nets(custom_net, 'custom_auto', args)
    s = caffe_pb2.SolverParameter()
    s.random_seed = args.seed
    s.train_net = train_path
    s.test_net.append(test_path)
    s.test_interval = 500
    s.test_iter.append(args.test_iters)
    s.max_iter = 10000
    s.type = "SGD"
    s.base_lr = 0.01
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.lr_policy = 'inv'
    s.gamma = 0.0001
    s.power = 0.75
    s.display = 1000
    s.snapshot = 5000
    s.snapshot_prefix = os.path.join('mnist', 'custom_net')
    s.solver_mode = caffe_pb2.SolverParameter.GPU  # from Python, set_mode_* decides
    solver_path = os.path.join('mnist', 'custom_auto_solver.prototxt')
    with open(solver_path, 'w') as f:
        f.write(str(s))

    solver = caffe.get_solver(solver_path)
    assert type(solver).__name__ == 'SGDSolver', type(solver)
    niter = args.niter
    train_loss = np.zeros(niter)
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs['loss'].data
    correct = 0
    for _ in range(args.test_iters):
        solver.test_nets[0].forward()
        correct += sum(solver.test_nets[0].blobs['score'].data.argmax(1)
                       == solver.test_nets[0].blobs['label'].data)
    accuracy = correct / (args.test_iters * args.test_batch)
    print('custom net: train loss %.3f -> %.3f, test accuracy %.3f'
          % (train_loss[0], train_loss[-1], accuracy))
    k = max(1, niter // 5)
    assert train_loss[-k:].mean() < train_loss[:k].mean(), "custom net's loss did not decrease"
    return accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_lmdb")
    parser.add_argument("test_lmdb")
    parser.add_argument("workdir")
    parser.add_argument("--niter", type=int, default=200)
    parser.add_argument("--test-interval", type=int, default=25)
    parser.add_argument("--test-iters", type=int, default=100)
    parser.add_argument("--test-batch", type=int, default=100)
    parser.add_argument("--gpu", action="store_true", help="train on GPU 0")
    parser.add_argument("--seed", type=int, default=0xCAFFE, help="the solvers' random_seed")
    parser.add_argument("--min-accuracy", type=float, default=None,
                        help="fail unless the last test accuracy is above this")
    args = parser.parse_args()
    # as the notebook, from examples/: the nets and solvers under mnist/, named by
    # paths relative to the current directory
    args.train_lmdb, args.test_lmdb = map(os.path.abspath, (args.train_lmdb, args.test_lmdb))
    os.chdir(args.workdir)
    os.makedirs('mnist', exist_ok=True)

    train_path, test_path = write_nets(lenet, 'lenet_auto', args)

    # The notebook's lenet_auto_solver.prototxt, built here with caffe_pb2.
    s = caffe_pb2.SolverParameter()
    s.train_net = train_path
    s.test_net.append(test_path)
    s.test_iter.append(args.test_iters)
    s.test_interval = 500
    s.base_lr = 0.01
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.lr_policy = 'inv'
    s.gamma = 1e-4
    s.power = 0.75
    s.display = 100
    s.max_iter = 10000
    s.snapshot = 5000
    s.snapshot_prefix = os.path.join('mnist', 'lenet')
    s.random_seed = args.seed
    solver_path = os.path.join('mnist', 'lenet_auto_solver.prototxt')
    with open(solver_path, 'w') as f:
        f.write(str(s))

    if args.gpu:  # as the notebook does
        caffe.set_device(0)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    solver = caffe.SGDSolver(solver_path)

    shapes = dict((k, v.data.shape) for k, v in solver.net.blobs.items())
    assert shapes['data'] == (64, 1, 28, 28), shapes
    assert shapes['label'] == (64,), shapes
    assert shapes['conv1'] == (64, 20, 24, 24), shapes
    assert shapes['pool2'] == (64, 50, 4, 4), shapes
    assert shapes['score'] == (64, 10), shapes
    weights = dict((k, v[0].data.shape) for k, v in solver.net.params.items())
    assert weights == {'conv1': (20, 1, 5, 5), 'conv2': (50, 20, 5, 5),
                       'fc1': (500, 800), 'score': (10, 500)}, weights

    solver.net.forward()
    solver.test_nets[0].forward()
    data = solver.net.blobs['data'].data
    assert 0 <= data.min() and data.max() <= 1, (data.min(), data.max())  # scale 1/255
    tiled = data[:8, 0].transpose(1, 0, 2).reshape(28, 8 * 28)  # the notebook's imshow
    assert tiled.shape == (28, 224)
    labels = solver.net.blobs['label'].data[:8]
    assert set(labels) <= set(range(10)), labels
    print('train labels:', labels)
    print('test labels:', solver.test_nets[0].blobs['label'].data[:8])

    solver.step(1)
    grid = (solver.net.params['conv1'][0].diff[:, 0].reshape(4, 5, 5, 5)
            .transpose(0, 2, 1, 3).reshape(4 * 5, 5 * 5))
    assert grid.shape == (20, 25) and np.abs(grid).sum() > 0, "conv1 got no gradient"

    niter = args.niter
    test_interval = args.test_interval
    train_loss = np.zeros(niter)
    test_acc = np.zeros(int(np.ceil(niter / test_interval)))
    output = np.zeros((niter, 8, 10))
    test_net = solver.test_nets[0]
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs['loss'].data
        # start at conv1, so the test batch stays the same
        first_labels = test_net.blobs['label'].data[:8].copy()
        test_net.forward(start='conv1')
        assert (test_net.blobs['label'].data[:8] == first_labels).all()
        output[it] = test_net.blobs['score'].data[:8]
        if it % test_interval == 0:
            print('Iteration', it, 'testing...')
            correct = 0
            for _ in range(args.test_iters):
                test_net.forward()
                correct += sum(test_net.blobs['score'].data.argmax(1)
                               == test_net.blobs['label'].data)
            test_acc[it // test_interval] = correct / (args.test_iters * args.test_batch)
    print('train loss:', ' '.join('%.3f' % v for v in train_loss))
    print('test accuracy:', ' '.join('%.3f' % v for v in test_acc))
    assert np.isfinite(train_loss).all()
    assert solver.iter == niter + 1, solver.iter
    k = max(1, niter // 5)
    assert train_loss[-k:].mean() < train_loss[:k].mean(), "training loss did not decrease"
    if args.min_accuracy is not None:
        assert test_acc[-1] > args.min_accuracy, (test_acc[-1], args.min_accuracy)
    del solver  # the notebook's workaround: free the LMDB readers before the next solver
    custom_acc = run_custom(args)
    if args.min_accuracy is not None:
        assert custom_acc > args.min_accuracy, (custom_acc, args.min_accuracy)
    print('learning_lenet: OK, LeNet test accuracy %.3f, custom net %.3f'
          % (test_acc[-1], custom_acc))


if __name__ == '__main__':
    main()
