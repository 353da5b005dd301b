"""Reading and writing Caffe files, and pycaffe's ``caffe.io`` helpers.

``files``: prototxt / caffemodel / solver / binaryproto readers (regular files
only, path fields checked, NaN/inf weights reported: ``set_strict_weights``) and
atomic writers (``WriteError``, ``remove_stale_temporaries``); ``upgrade``: old formats to V2 in memory; ``db``: LMDB / LevelDB
databases; ``caffe_io``: pycaffe's ``caffe.io`` functions, re-exported here so
``caffe.io.load_image`` works as in pycaffe.
"""
from .caffe_io import (  # noqa: F401
    Transformer,
    array_to_blobproto,
    array_to_datum,
    arraylist_to_blobprotovector_str,
    blobproto_to_array,
    blobprotovector_str_to_arraylist,
    datum_to_array,
    load_image,
    oversample,
    resize_image,
)
