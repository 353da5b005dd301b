"""Q-CNN's product-quantised layers (Wu et al., CVPR 2016): QConvolution, QInnerProduct.

A layer's inputs split into subspaces of ``D`` values (channels for a
convolution, at each kernel offset); each subspace has a codebook of ``K``
codewords, and each output holds, per subspace (and kernel offset), the index
of one codeword: the weight it stands for is the codewords laid side by side.
Forward never builds that weight: it computes the table of inner products of
every input sub-vector with every codeword, then sums the entries the
indices pick (:mod:`pycaffe_lite.engines.lookup`).

Param blobs: ``codebooks [S, K, D]`` (float), ``indices`` (unsigned integers,
uint8 up to 256 codewords, else uint16; written bit-packed in a caffemodel
and unpacked once when it is read), ``bias [num_output]`` (with
``bias_term``).  The layers are inference-only: none of the blobs is learned
(no ``param`` spec means ``lr_mult: 0``; a non-zero one is an error in TRAIN),
and a net that asks them for a bottom gradient is refused when built.
"""
from pycaffe_lite.blob import Blob
from pycaffe_lite.engines import lookup
from pycaffe_lite.engines.im2col import ConvGeometry
from pycaffe_lite.layer import register

from .conv import ConvolutionLayer, InnerProductLayer

_INFERENCE_ONLY = ("lookup-table forward only: Q-CNN's codebooks and indices are not "
                   "learned, and no gradient is passed to its bottom")


class _ProductQuantised:
    """What QConvolution and QInnerProduct share: the codebook size, the blobs, the
    frozen params and the refused backward."""

    inference_only = _INFERENCE_ONLY
    qparam_field = None

    def read_codebook(self, inputs):
        """Subspace dim, codebook size and subspace count for ``inputs`` values."""
        q = getattr(self.param, self.qparam_field)
        self.subspace_dim = self.positive(f"{self.qparam_field}.subspace_dim", q.subspace_dim)
        self.codewords = self.positive(f"{self.qparam_field}.codebook_size", q.codebook_size)
        if self.codewords > 1 << 16:
            raise self.error(f"{self.qparam_field}.codebook_size {self.codewords} is more than "
                             f"{1 << 16} codewords")
        self.subspaces = -(-inputs // self.subspace_dim)

    def add_blobs(self, index_shape, bias_filler, subspace_major=False):
        """Codebooks, indices (``subspace_major``: stored in memory as ``[S, ...]``, the
        order the lookup kernel reads, while the blob's shape stays ``[..., S]``) and bias."""
        # One at a time: a blob the memory guard refuses is named by its index.
        self.blobs.append(self.make_blob((self.subspaces, self.codewords, self.subspace_dim)))
        index = Blob(index_shape, xp=self.xp, dtype=lookup.index_dtype(self.codewords))
        if subspace_major:
            index.data = self.xp.zeros(index_shape[::-1], index.dtype).T
        self.blobs.append(index)
        if self.bias_term:
            self.add_param_blob((self.num_output,), bias_filler)
        self._freeze()

    def _freeze(self):
        for k in range(len(self.blobs)):
            if len(self.param.param) == k:
                spec = self.param.param.add()
                spec.lr_mult = spec.decay_mult = 0.0
            elif self.param.param[k].lr_mult != 0 and self.phase == 0:
                raise self.error(f"param {k} has lr_mult {self.param.param[k].lr_mult}: "
                                 f"{self.type} is inference-only ({_INFERENCE_ONLY}); expected "
                                 "lr_mult 0 or no param spec")

    @property
    def codebooks(self):
        return self.blobs[0].data

    @property
    def indices(self):
        return self.blobs[1].data

    def bias(self):
        return self.blobs[2].data if self.bias_term else None

    def run_lookup(self, call):
        try:
            call()
        except lookup.LookupIndexError as e:
            raise self.error(f"param 1 (indices): {e}") from None

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error(f"has no backward ({_INFERENCE_ONLY}); give it "
                             "propagate_down: false")


@register("QConvolution")
class QConvolutionLayer(_ProductQuantised, ConvolutionLayer):
    """Product-quantised convolution (Q-CNN's approximate conv layer).

    ``convolution_param`` gives num_output, kernel, stride, pad, dilation, group,
    bias_term and axis (1 or 2 spatial axes); ``q_convolution_param`` gives
    ``subspace_dim D`` (8) and ``codebook_size K`` (128).  Each group's ``C/group``
    channels split into ``S = ceil(C/group / D)`` subspaces (the last one may be
    shorter: only its first dimensions count); the codebooks are shared by the
    groups.  Forward: ``y[n, m, o] = b[m] + sum_{k, s} T[n, s, I[m, k, s], o*stride +
    k*dilation]`` with ``T[n, s, j, p] = sum_d C[s, j, d] x_pad[n, g(m)*C/group + s*D
    + d, p]``: the convolution with ``W[m, s*D + d, k] = C[s, I[m, k, s], d]``.
    No backward.  Blobs ``C [S, K, D]``, ``I [num_output, *kernel, S]``, ``b
    [num_output]``; bottom and top as Convolution.
    """

    qparam_field = "q_convolution_param"

    def make_param_blobs(self, cp):
        if self.num_spatial not in (1, 2):
            raise self.error(f"QConvolution supports 1 or 2 spatial axes, bottom "
                             f"'{self.bottom_name(0)}' has {self.num_spatial}")
        self.read_codebook(self.channels // self.group)
        self.add_blobs((self.num_output,) + self.geom.kernel + (self.subspaces,),
                       cp.bias_filler)
        g = self.geom
        if self.num_spatial == 1:  # as 2-D with a height of 1
            self.geom = ConvGeometry((1,) + g.kernel, (1,) + g.stride, (0,) + g.pad,
                                     (1,) + g.dilation)
            self._geom_1d = g

    def output_spatial(self, in_spatial):
        if self.num_spatial == 1:
            return self._geom_1d.conv_out_shape(in_spatial)
        return super().output_spatial(in_spatial)

    @property
    def fan_in(self):
        return self.channels // self.group * self.geom.kernel_count

    def dense_weight(self):
        """The weight the indices stand for: ``[num_output, C/group, *kernel]``."""
        return lookup.conv_weight(self.codebooks, self.indices, self.channels // self.group)

    def forward(self, bottom, top):
        indices = self.indices.reshape((self.num_output,) + self.geom.kernel
                                       + (self.subspaces,))
        for b, t in zip(bottom, top):
            x, y = self._as_batch(b.data), self._as_batch(t.data)
            if self.num_spatial == 1:
                x = x[:, :, None]
                y = y[:, :, None]
            self.run_lookup(lambda: lookup.conv_forward(
                x, self.codebooks, indices, self.geom, self.group, y, self.bias()))


@register("QInnerProduct")
class QInnerProductLayer(_ProductQuantised, InnerProductLayer):
    """Product-quantised inner product (Q-CNN's approximate FC layer).

    ``inner_product_param`` gives num_output, bias_term and axis (``transpose`` is
    refused); ``q_inner_product_param`` gives ``subspace_dim D`` (4) and
    ``codebook_size K`` (32).  The ``I`` inputs from ``axis`` on split into ``S =
    ceil(I / D)`` subspaces.  Forward: ``y[n, m] = b[m] + sum_s T[n, s, J[m, s]]``
    with ``T[n, s, j] = sum_d C[s, j, d] x[n, s*D + d]``: the inner product with
    ``W[m, s*D + d] = C[s, J[m, s], d]``.  No backward.  Blobs ``C [S, K, D]``,
    ``J [num_output, S]``, ``b [num_output]``; bottom and top as InnerProduct.
    """

    qparam_field = "q_inner_product_param"

    def make_param_blobs(self, p):
        if self.transpose:
            raise self.error("inner_product_param.transpose is not supported by "
                             "QInnerProduct (its indices are [num_output, subspaces])")
        self.read_codebook(self.k)
        self.add_blobs((self.num_output, self.subspaces), p.bias_filler, subspace_major=True)

    @property
    def fan_in(self):
        return self.k

    def dense_weight(self):
        """The weight the indices stand for: ``[num_output, inputs]``."""
        return lookup.fc_weight(self.codebooks, self.indices, self.k)

    def forward(self, bottom, top):
        x = self._rows(bottom[0].data)
        out = top[0].data.reshape(-1, self.num_output)
        self.run_lookup(lambda: lookup.fc_forward(x, self.codebooks, self.indices, out,
                                                  self.bias()))

