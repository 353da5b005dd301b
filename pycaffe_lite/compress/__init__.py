"""Compression pipelines: ``labelfree`` (4-bit power-of-two weights, BatchNorm
re-normalisation from unlabeled images, 8-bit activations; He & Cheng, ECCV 2018)."""
from .pipeline import CompressError, labelfree  # noqa: F401
