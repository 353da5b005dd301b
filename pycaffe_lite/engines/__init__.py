"""Engines: the heavy loops behind the layers, each behind one small interface.

A layer (``layers/<family>.py``) reads its parameters, sizes its tops and
states the maths; it calls its engine for the work:

* :mod:`.im2col`: im2col / col2im and the chunked GEMMs of Convolution,
  Deconvolution and Im2col (``conv_forward``, ``conv_backward_data``,
  ``conv_backward_weight``, ``im2col``, ``col2im`` over a ``ConvGeometry``).
* :mod:`.pooling`: the window geometry and reductions of Pooling and SPP
  (``PoolGeometry``, ``Pooler.forward`` / ``Pooler.backward``).

This is where a CuPy kernel, a compiled (Numba) kernel, a Winograd path or
the lookup tables of the Q-CNN layers plug in: behind the same functions,
chosen from the arrays they are given (``get_array_module``), never from a
global flag, and only where a measurement shows they win.  The layers do not
change (Chainer's ``im2col_cpu`` / ``im2col_gpu`` pair, not Caffe's ``.cpp`` /
``.cu`` copies).
"""
