"""Helpers for testing layers: build one layer alone, check its gradients."""
from .gradient_check import check_gradient, make_layer  # noqa: F401
