"""BVLC's 00-classification notebook as a script: CaffeNet (here with random weights)
classifies an image prepared by caffe.io.Transformer; then the notebook's look at
every layer's blobs and params.

    python -m pycaffe_lite.run classification.py WORKDIR IMAGES_DIR CAFFENET_DEPLOY MEAN_NPY
        [--batch B] [--width-div D]

IMAGES_DIR holds cat.jpg and fish-bike.jpg.  The weights are drawn at random and
saved as a caffemodel, and the ImageNet labels are made up (n00000000 class 0...),
so the script checks the plumbing, not the predictions.  --width-div divides the
width of every layer but fc8 (1: CaffeNet's own).
"""
import os

import numpy as np

import caffe

from narrow import caffenet_arguments, fill_random, narrow, read_net


def vis_square(data):
    """The notebook's filter grid (n, h, w[, 3]) -> one image, returned, not shown."""
    data = (data - data.min()) / (data.max() - data.min())
    n = int(np.ceil(np.sqrt(data.shape[0])))
    padding = (((0, n ** 2 - data.shape[0]), (0, 1), (0, 1))
               + ((0, 0),) * (data.ndim - 3))
    data = np.pad(data, padding, mode='constant', constant_values=1)
    data = data.reshape((n, n) + data.shape[1:]).transpose(
        (0, 2, 1, 3) + tuple(range(4, data.ndim + 1)))
    return data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])


def main():
    parser = caffenet_arguments(__doc__)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    div = args.width_div

    model_def = os.path.join(args.workdir, 'deploy.prototxt')
    with open(model_def, 'w') as f:
        f.write(str(narrow(read_net(args.deploy), div, keep=['fc8'])))
    model_weights = os.path.join(args.workdir, 'caffenet_random.caffemodel')
    random_net = caffe.Net(model_def, caffe.TEST)
    fill_random(random_net)
    random_net.save(model_weights)
    labels_file = os.path.join(args.workdir, 'synset_words.txt')
    with open(labels_file, 'w') as f:
        f.write(''.join('n%08d class %d\n' % (i, i) for i in range(1000)))

    caffe.set_mode_cpu()
    net = caffe.Net(model_def,      # defines the structure of the model
                    model_weights,  # contains the trained weights
                    caffe.TEST)     # use test mode (e.g., don't perform dropout)
    # pycaffe's other spelling: Net(network_file, phase, weights=...)
    net2 = caffe.Net(model_def, caffe.TEST, weights=model_weights)
    for name, blobs in random_net.params.items():
        assert np.array_equal(net.params[name][0].data, blobs[0].data), name
        assert np.array_equal(net2.params[name][1].data, blobs[1].data), name
    del random_net, net2

    mu = np.load(args.mean)
    assert mu.shape == (3, 256, 256), mu.shape
    mu = mu.mean(1).mean(1)  # average over pixels to obtain the mean (BGR) pixel values
    print('mean-subtracted values:', list(zip('BGR', mu)))
    transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
    transformer.set_transpose('data', (2, 0, 1))
    transformer.set_mean('data', mu)
    transformer.set_raw_scale('data', 255)
    transformer.set_channel_swap('data', (2, 1, 0))

    net.blobs['data'].reshape(args.batch, 3, 227, 227)
    image = caffe.io.load_image(os.path.join(args.images, 'cat.jpg'))
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.float32, (
        image.shape, image.dtype)
    transformed_image = transformer.preprocess('data', image)
    # what the four settings mean: resize, scale to [0, 255], RGB -> BGR, minus the
    # per-channel mean, HxWxC -> CxHxW
    by_hand = (caffe.io.resize_image(image, (227, 227)) * 255)[:, :, ::-1] - mu
    assert np.allclose(transformed_image, by_hand.transpose(2, 0, 1), atol=1e-3)
    back = transformer.deprocess('data', transformed_image)
    assert np.allclose(back, caffe.io.resize_image(image, (227, 227)), atol=1e-4)

    net.blobs['data'].data[...] = transformed_image
    output = net.forward()
    output_prob = output['prob'][0]
    assert output['prob'].shape == (args.batch, 1000), output['prob'].shape
    assert abs(output_prob.sum() - 1) < 1e-4 and output_prob.min() >= 0
    # the image went into every item of the batch: every item gets the same scores
    # (up to the BLAS kernel's summing order, which may differ from row to row)
    fc8 = net.blobs['fc8'].data
    assert np.abs(fc8 - fc8[0]).max() <= 1e-4 * np.abs(fc8[0]).max()
    print('predicted class is:', output_prob.argmax())

    labels = np.loadtxt(labels_file, str, delimiter='\t')
    print('output label:', labels[output_prob.argmax()])
    assert labels[output_prob.argmax()] == 'n%08d class %d' % ((output_prob.argmax(),) * 2)
    top_inds = output_prob.argsort()[::-1][:5]
    print('probabilities and labels:', list(zip(output_prob[top_inds], labels[top_inds])))
    assert (np.diff(output_prob[top_inds]) <= 0).all()

    for layer_name, blob in net.blobs.items():
        print(layer_name + '\t' + str(blob.data.shape))
    for layer_name, param in net.params.items():
        print(layer_name + '\t' + str(param[0].data.shape), str(param[1].data.shape))
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    B = args.batch
    assert shapes['conv1'] == (B, 96 // div, 55, 55), shapes['conv1']
    assert shapes['pool5'] == (B, 256 // div, 6, 6), shapes['pool5']
    assert shapes['fc6'] == (B, 4096 // div), shapes['fc6']
    assert list(net.params) == ['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7',
                                'fc8']

    filters = net.params['conv1'][0].data
    grid = vis_square(filters.transpose(0, 2, 3, 1))
    n = int(np.ceil(np.sqrt(filters.shape[0])))
    assert grid.shape == (n * 12, n * 12, 3), grid.shape
    feat = net.blobs['conv1'].data[0, :36]
    assert vis_square(feat).ndim == 2
    feat = net.blobs['pool5'].data[0]
    assert vis_square(feat).ndim == 2
    feat = net.blobs['fc6'].data[0]
    assert (feat.flat[feat.flat > 0] > 0).all() and (feat >= 0).all()  # fc6 after its ReLU
    feat = net.blobs['prob'].data[0]
    assert np.array_equal(feat, output_prob)

    # the notebook's last cell: another image, the output read from the blob
    first_prob = output_prob.copy()  # output['prob'] is the blob's memory, as in pycaffe
    first_fc8 = net.blobs['fc8'].data[0].copy()
    image = caffe.io.load_image(os.path.join(args.images, 'fish-bike.jpg'))
    net.blobs['data'].data[...] = transformer.preprocess('data', image)
    net.forward()
    other_prob = net.blobs['prob'].data[0]
    assert np.array_equal(other_prob, output_prob)  # the same memory
    # (random weights saturate the softmax: compare the scores before it)
    fc8 = net.blobs['fc8'].data[0]
    assert np.abs(fc8 - first_fc8).max() > 1e-3 * np.abs(first_fc8).max()
    top_inds = other_prob.argsort()[::-1][:5]
    print('probabilities and labels:', list(zip(other_prob[top_inds], labels[top_inds])))
    print('classification: OK, predicted %d then %d' % (first_prob.argmax(),
                                                        other_prob.argmax()))


if __name__ == '__main__':
    main()
