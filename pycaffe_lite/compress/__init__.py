"""Compression pipelines: ``labelfree`` (4-bit power-of-two weights, BatchNorm
re-normalisation from unlabeled images, 8-bit activations; He & Cheng, ECCV 2018)
and :func:`pycaffe_lite.compress.qcnn.compress` (Q-CNN's product quantisation with
error correction; Wu et al., CVPR 2016)."""
from .pipeline import CompressError, labelfree  # noqa: F401
