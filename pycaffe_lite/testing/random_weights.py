"""Random weights that keep a deep net's activations in range.

Weights ~ N(0, 1/fan_in), other params (biases, Scale's gamma and beta) small,
``N(0, 0.01)``; BatchNorm statistics mean 0, variance 1, scale factor 1.  Q-CNN layers:
codewords ~ N(0, 1/fan_in) of the dense layer they stand for, indices uniform.  For
benchmarks and tests of nets whose trained weights are not at hand (the
prototxts' own fillers are often absent, i.e. constant 0).
"""
import numpy



def randomize(net, seed=0):
    rng = numpy.random.default_rng(seed)
    for record in net.records:
        blobs = record.layer.blobs
        if record.layer.type == "BatchNorm":
            for blob, value in zip(blobs, (0, 1, 1)):
                blob.data[...] = value
            continue
        for k, blob in enumerate(blobs):
            shape = blob.shape
            if blob.dtype.kind == "u":  # Q-CNN's codeword indices: uniform
                blob.data[...] = net.xp.asarray(rng.integers(0, blobs[0].shape[1], shape))
                continue
            if k == 0 and hasattr(record.layer, "fan_in"):  # Q-CNN's codebooks
                values = rng.normal(0, record.layer.fan_in ** -0.5, shape)
            elif k == 0 and len(shape) > 1:
                fan_in = int(numpy.prod(shape[1:]))
                values = rng.normal(0, fan_in ** -0.5, shape)
            else:
                values = rng.normal(0, 0.01, shape)
            blob.data[...] = net.xp.asarray(values.astype(blob.dtype))
    return net
