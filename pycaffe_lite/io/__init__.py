"""Reading and writing Caffe files, and pycaffe's ``caffe.io`` helpers."""
