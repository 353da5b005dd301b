"""The one random generator every filler, Dropout and shuffle draws from.

``set_random_seed`` (pycaffe's ``caffe.set_random_seed``, the solver's
``random_seed``) reseeds it.  The streams differ from Caffe's boost::mt19937,
so random values are reproducible run to run but not equal to Caffe's.
"""
import numpy

_generator = numpy.random.default_rng()


def set_random_seed(seed):
    global _generator
    _generator = numpy.random.default_rng(int(seed))


def generator():
    return _generator
