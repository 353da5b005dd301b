"""Helpers for testing layers and nets: build one layer alone, check its
gradients; random weights for nets without trained ones."""
from .gradient_check import check_gradient, make_layer  # noqa: F401
from .random_weights import randomize  # noqa: F401
