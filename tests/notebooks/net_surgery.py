"""BVLC's net_surgery notebook as a script: edit a conv net's parameters by hand,
then cast CaffeNet's fully connected layers into convolutions (the fully
convolutional CaffeNet) and check it classifies every 227x227 window at once.

    python -m pycaffe_lite.run net_surgery.py WORKDIR IMAGES_DIR CAFFENET_DEPLOY MEAN_NPY
        [--full-size S] [--width-div D]

IMAGES_DIR holds cat.jpg and cat_gray.jpg (Caffe's examples/images).  CaffeNet's
weights are not needed: the script fills the deploy net at random and saves them.
--width-div divides the width of every layer but fc8 (1: CaffeNet's own).
"""
import os

import numpy as np

import caffe

from narrow import caffenet_arguments, fill_random, narrow, read_net

CONV_PROTOTXT = """name: "convolution"
layer { name: "data" type: "Input" top: "data"
        input_param { shape: { dim: 1 dim: 1 dim: 100 dim: 100 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 5 stride: 1
                            weight_filler { type: "gaussian" std: 0.01 }
                            bias_filler { type: "constant" value: 0 } } }
"""


def correlate(image, kernel):
    """Caffe's convolution (a correlation, no padding) of one 2-D image."""
    kh, kw = kernel.shape
    result = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1))
    for i in range(kh):
        for j in range(kw):
            result += kernel[i, j] * image[i:i + result.shape[0], j:j + result.shape[1]]
    return result


def edit_filters(workdir, images):
    conv_path = os.path.join(workdir, 'conv.prototxt')
    with open(conv_path, 'w') as f:
        f.write(CONV_PROTOTXT)
    caffe.set_mode_cpu()
    net = caffe.Net(conv_path, caffe.TEST)
    print("blobs {}\nparams {}".format(list(net.blobs.keys()), list(net.params.keys())))
    assert list(net.blobs.keys()) == ['data', 'conv'] and list(net.params.keys()) == ['conv']

    im = np.array(caffe.io.load_image(os.path.join(images, 'cat_gray.jpg'),
                                      color=False)).squeeze()
    assert im.ndim == 2 and 0 <= im.min() and im.max() <= 1, (im.shape, im.min(), im.max())
    im_input = im[np.newaxis, np.newaxis, :, :]
    net.blobs['data'].reshape(*im_input.shape)
    net.blobs['data'].data[...] = im_input

    net.forward()
    assert net.blobs['conv'].data.shape == (1, 3) + tuple(d - 4 for d in im.shape)
    conv0 = net.blobs['conv'].data[0, 0]
    pre = conv0.mean()
    print("pre-surgery output mean {:.2f}".format(pre))
    net.params['conv'][1].data[0] = 1.
    net.forward()
    post = conv0.mean()  # the same view: forward writes into the blob's memory
    print("post-surgery output mean {:.2f}".format(post))
    assert abs(post - pre - 1.) < 1e-3, (pre, post)

    ksize = net.params['conv'][0].data.shape[2:]
    sigma = 1.
    y, x = np.mgrid[-ksize[0] // 2 + 1:ksize[0] // 2 + 1, -ksize[1] // 2 + 1:ksize[1] // 2 + 1]
    g = np.exp(-((x ** 2 + y ** 2) / (2.0 * sigma ** 2)))
    gaussian = (g / g.sum()).astype(np.float32)
    net.params['conv'][0].data[0] = gaussian
    net.params['conv'][0].data[1:] = 0.
    sobel = np.array((-1, -2, -1, 0, 0, 0, 1, 2, 1), dtype=np.float32).reshape((3, 3))
    net.params['conv'][0].data[1, 0, 1:-1, 1:-1] = sobel
    net.params['conv'][0].data[2, 0, 1:-1, 1:-1] = sobel.T
    net.forward()
    filtered = net.blobs['conv'].data[0]
    filters = net.params['conv'][0].data[:, 0]
    biases = net.params['conv'][1].data
    for k in range(3):
        expected = correlate(im.astype(np.float64), filters[k]) + biases[k]
        err = np.abs(filtered[k] - expected).max()
        assert err < 1e-4, (k, err)
    print('filters: blur, horizontal and vertical Sobel match a NumPy correlation')


def full_conv_prototxt(deploy_path, size, width_div):
    """CaffeNet's deploy net with fc6/fc7/fc8 recast as convolutions (kernel 6, 1, 1),
    renamed fc6-conv..., on a size x size input: examples/net_surgery's full-conv net."""
    net = narrow(read_net(deploy_path), width_div, keep=['fc8'])
    net.name = 'CaffeNetConv'
    net.layer[0].input_param.shape[0].dim[:] = [1, 3, size, size]
    renamed = {}
    for layer in net.layer:
        layer.bottom[:] = [renamed.get(b, b) for b in layer.bottom]
        if layer.type == 'InnerProduct':
            old = layer.name
            num_output = layer.inner_product_param.num_output
            layer.ClearField('inner_product_param')
            layer.type = 'Convolution'
            layer.name = old + '-conv'
            layer.convolution_param.num_output = num_output
            layer.convolution_param.kernel_size.append(6 if old == 'fc6' else 1)
            renamed[old] = layer.name
        layer.top[:] = [renamed.get(t, t) for t in layer.top]
    return str(net)


def full_conv(workdir, images, deploy_path, mean_npy, size, width_div):
    deploy = os.path.join(workdir, 'deploy.prototxt')
    with open(deploy, 'w') as f:
        f.write(str(narrow(read_net(deploy_path), width_div, keep=['fc8'])))
    deploy_net = caffe.Net(deploy, caffe.TEST)
    fill_random(deploy_net)  # stands in for bvlc_reference_caffenet.caffemodel
    weights = os.path.join(workdir, 'caffenet_random.caffemodel')
    deploy_net.save(weights)
    del deploy_net

    net = caffe.Net(deploy, weights, caffe.TEST)
    params = ['fc6', 'fc7', 'fc8']
    fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
    for fc in params:
        print('{} weights are {} dimensional and biases are {} dimensional'.format(
            fc, fc_params[fc][0].shape, fc_params[fc][1].shape))
    fc6_out, fc6_in = 4096 // width_div, 256 // width_div
    assert fc_params['fc6'][0].shape == (fc6_out, fc6_in * 36), fc_params['fc6'][0].shape

    full_conv_path = os.path.join(workdir, 'bvlc_caffenet_full_conv.prototxt')
    with open(full_conv_path, 'w') as f:
        f.write(full_conv_prototxt(deploy_path, size, width_div))
    net_full_conv = caffe.Net(full_conv_path, weights, caffe.TEST)
    params_full_conv = ['fc6-conv', 'fc7-conv', 'fc8-conv']
    conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
                   for pr in params_full_conv}
    for conv in params_full_conv:
        print('{} weights are {} dimensional and biases are {} dimensional'.format(
            conv, conv_params[conv][0].shape, conv_params[conv][1].shape))
    assert conv_params['fc6-conv'][0].shape == (fc6_out, fc6_in, 6, 6)
    # conv1-5 came from the caffemodel by name, the new fc*-conv layers did not
    assert np.array_equal(net_full_conv.params['conv5'][0].data, net.params['conv5'][0].data)
    assert not conv_params['fc6-conv'][0].any()

    for pr, pr_conv in zip(params, params_full_conv):
        conv_params[pr_conv][0].flat = fc_params[pr][0].flat  # flat unrolls the arrays
        conv_params[pr_conv][1][...] = fc_params[pr][1]
    assert np.array_equal(net_full_conv.params['fc6-conv'][0].data.reshape(fc6_out, -1),
                          net.params['fc6'][0].data)
    surgery_weights = os.path.join(workdir, 'bvlc_caffenet_full_conv.caffemodel')
    net_full_conv.save(surgery_weights)

    im = caffe.io.load_image(os.path.join(images, 'cat.jpg'))
    transformer = caffe.io.Transformer({'data': net_full_conv.blobs['data'].data.shape})
    transformer.set_mean('data', np.load(mean_npy).mean(1).mean(1))
    transformer.set_transpose('data', (2, 0, 1))
    transformer.set_channel_swap('data', (2, 1, 0))
    transformer.set_raw_scale('data', 255.0)
    data = transformer.preprocess('data', im)
    assert data.shape == (3, size, size), data.shape
    out = net_full_conv.forward_all(data=np.asarray([data]))
    side = (size - 227) // 32 + 1
    assert out['prob'].shape == (1, 1000, side, side), out['prob'].shape
    print(out['prob'][0].argmax(axis=0))
    back = transformer.deprocess('data', net_full_conv.blobs['data'].data[0])
    assert np.abs(back - caffe.io.resize_image(im, (size, size))).max() < 1e-3

    # The point of the surgery: each output location is CaffeNet on one 227x227 window
    # (stride 32; exactly so on a 227x227 input, where no padding of conv2-5 sees a
    # neighbouring window), from the weights the surgery saved.
    reloaded = caffe.Net(full_conv_path, surgery_weights, caffe.TEST)
    for i, j in ((0, 0), (side - 1, side - 1)):
        window = data[np.newaxis, :, 32 * i:32 * i + 227, 32 * j:32 * j + 227]
        reloaded.blobs['data'].reshape(*window.shape)
        dense = reloaded.forward_all(data=window, blobs=['fc8-conv'])['fc8-conv']
        assert dense.shape == (1, 1000, 1, 1), dense.shape
        net.blobs['data'].reshape(*window.shape)
        fc8 = net.forward_all(data=window, blobs=['fc8'])['fc8'][0]
        err = np.abs(fc8 - dense[0, :, 0, 0]).max() / np.abs(fc8).max()
        print('window', (i, j), 'fully convolutional vs CaffeNet: relative error', err)
        # measured: 0.0 (at full width and 1/4, OpenBLAS Haswell and Sandybridge kernels)
        assert err < 1e-4, (i, j, err)
    return out


def main():
    parser = caffenet_arguments(__doc__)
    parser.add_argument("--full-size", type=int, default=451)
    args = parser.parse_args()
    edit_filters(args.workdir, args.images)
    full_conv(args.workdir, args.images, args.deploy, args.mean, args.full_size, args.width_div)
    print('net_surgery: OK')


if __name__ == '__main__':
    main()
