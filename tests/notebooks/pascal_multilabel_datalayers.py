"""The Python data layer of BVLC's pascal-multilabel-with-datalayer notebook, written
anew: it reads a PASCAL-VOC-style folder (ImageSets/Main/<split>.txt, JPEGImages/,
Annotations/) and gives (image batch, 20-way multilabel) tops.
"""
import os.path as osp
import random
from xml.dom import minidom

import numpy as np

import caffe

CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
           'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
           'sheep', 'sofa', 'train', 'tvmonitor')


class SimpleTransformer:
    """RGB HxWx3 in [0, 255] -> mean-subtracted BGR 3xHxW, and back."""

    def __init__(self, mean=(128, 128, 128)):
        self.mean = np.array(mean, dtype=np.float32)
        self.scale = 1.0

    def preprocess(self, im):
        im = np.float32(im)[:, :, ::-1] - self.mean
        return (im * self.scale).transpose(2, 0, 1)

    def deprocess(self, im):
        im = im.transpose(1, 2, 0) / self.scale + self.mean
        return np.uint8(np.clip(np.round(im[:, :, ::-1]), 0, 255))


def load_pascal_annotation(index, pascal_root):
    """{'gt_classes': 1-based class indices, 'boxes': [x1, y1, x2, y2] 0-based}."""
    with open(osp.join(pascal_root, 'Annotations', index + '.xml')) as f:
        doc = minidom.parseString(f.read())

    def text(node, tag):
        return node.getElementsByTagName(tag)[0].childNodes[0].data

    objects = doc.getElementsByTagName('object')
    classes = np.zeros(len(objects), dtype=np.int32)
    boxes = np.zeros((len(objects), 4), dtype=np.uint16)
    for i, obj in enumerate(objects):
        classes[i] = CLASSES.index(text(obj, 'name').strip().lower()) + 1
        boxes[i] = [float(text(obj, tag)) - 1 for tag in ('xmin', 'ymin', 'xmax', 'ymax')]
    return {'gt_classes': classes, 'boxes': boxes, 'index': index}


class BatchLoader:
    """Walks the split's image list (reshuffled after each epoch), one image at a time."""

    def __init__(self, params):
        self.pascal_root = params['pascal_root']
        self.im_shape = params['im_shape']
        with open(osp.join(self.pascal_root, 'ImageSets/Main', params['split'] + '.txt')) as f:
            self.indexlist = [line.strip() for line in f if line.strip()]
        self._cur = 0
        self.transformer = SimpleTransformer()
        print('BatchLoader initialized with {} images'.format(len(self.indexlist)))

    def load_next_image(self):
        if self._cur == len(self.indexlist):
            self._cur = 0
            random.shuffle(self.indexlist)
        index = self.indexlist[self._cur]
        im = caffe.io.load_image(osp.join(self.pascal_root, 'JPEGImages', index + '.jpg'))
        im = caffe.io.resize_image(im, self.im_shape) * 255.  # RGB, [0, 255]
        if random.random() < 0.5:  # horizontal flip, the notebook's augmentation
            im = im[:, ::-1, :]
        multilabel = np.zeros(20, dtype=np.float32)
        for label in load_pascal_annotation(index, self.pascal_root)['gt_classes']:
            multilabel[label - 1] = 1  # present or not; how many does not matter
        self._cur += 1
        return self.transformer.preprocess(im), multilabel


def check_params(params):
    assert 'split' in params, 'Params must include split (train, val, or test).'
    for name in ('batch_size', 'pascal_root', 'im_shape'):
        assert name in params, 'Params must include {}'.format(name)


class PascalMultilabelDataLayerSync(caffe.Layer):
    """Synchronous multilabel data layer: tops data (N, 3, H, W) and label (N, 20)."""

    def setup(self, bottom, top):
        self.top_names = ['data', 'label']
        params = eval(self.param_str)  # a dict's repr, as the notebook passes it
        check_params(params)
        self.batch_size = params['batch_size']
        self.batch_loader = BatchLoader(params)
        # fixed image size: shape the tops once, here
        top[0].reshape(self.batch_size, 3, params['im_shape'][0], params['im_shape'][1])
        top[1].reshape(self.batch_size, 20)
        print('PascalMultilabelDataLayerSync initialized for split: {}, with bs: {}, '
              'im_shape: {}.'.format(params['split'], params['batch_size'],
                                     params['im_shape']))

    def forward(self, bottom, top):
        for itt in range(self.batch_size):
            im, multilabel = self.batch_loader.load_next_image()
            top[0].data[itt, ...] = im
            top[1].data[itt, ...] = multilabel

    def reshape(self, bottom, top):
        pass  # shaped once in setup

    def backward(self, top, propagate_down, bottom):
        pass  # a data layer: nothing to propagate
