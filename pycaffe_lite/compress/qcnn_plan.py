"""Which layers ``compress qcnn`` quantises, with what D and K, and the net with them
as Q layers.

``--layers`` names the layers (default: every Convolution / InnerProduct of
the TEST net), each optionally with its own values: ``conv1:1:16`` is conv1
with subspaces of ``D = 1`` value and ``K = 16`` codewords (0 or empty: the
global ``--subspace_dim`` / ``--codebook``, else Q-CNN's defaults, 8 and 128
for convolutions, 4 and 32 for inner products).  A D given for the layer
must fit its inputs (per group); a global or default D larger than them
shrinks to them (Q-CNN's conv1 holds 3 channels in 8-value codewords; the
extra 5 values would only be stored).
"""
import dataclasses
import logging
import re

from ..layer import TEST
from . import netparams, qcnn_layers
from .stages import CompressError

log = logging.getLogger("pycaffe_lite")

MAX_CODEWORDS = 1 << 16     # what the Q layers' uint16 indices hold


def check_values(dim_name, dim, book_name, codewords):
    """A D of at least 1 and a K the Q layers hold, or a CompressError naming them."""
    if dim is not None and dim < 1:
        raise CompressError(f"{dim_name} must be at least 1, got {dim}")
    if codewords is not None and not 1 <= codewords <= MAX_CODEWORDS:
        raise CompressError(f"{book_name} must be 1..{MAX_CODEWORDS} codewords, got "
                            f"{codewords}")


# --- which layers, with what D and K -------------------------------------------------

def parse_layers(layers):
    """``{name: (D or None, K or None)}`` of ``--layers`` text (``a,b:8:16``), a list of
    such entries, or a dict ``{name: (D, K)}``; None: every layer."""
    if layers is None or isinstance(layers, dict):
        return None if layers is None else {n: tuple(v or (None, None)) for n, v in
                                            layers.items()}
    entries = layers.split(",") if isinstance(layers, str) else list(layers)
    wanted = {}
    for entry in entries:
        parts = entry.strip().split(":")
        try:
            values = [int(p) if p.strip() not in ("", "0") else None for p in parts[1:]]
        except ValueError:
            values = None
        if not parts[0] or values is None or len(values) > 2:
            raise CompressError(f"--layers: '{entry}' is not NAME or NAME:D:K (D values per "
                                "subspace, K codewords; 0 or empty: the default)")
        wanted[parts[0]] = tuple(values + [None] * (2 - len(values)))
    return wanted


def select(net_param, wanted, model):
    """The (name, type) of the layers to quantise, in the TEST net's order."""
    test = netparams.phase_param(net_param, TEST)
    candidates = [layer for layer in test.layer if layer.type in qcnn_layers.DEFAULTS]
    if wanted is None:
        if not candidates:
            raise CompressError(f"{model}: no Convolution or InnerProduct layer to quantise")
        return [(layer.name, layer.type) for layer in candidates]
    types = {layer.name: layer.type for layer in test.layer}
    for name in wanted:
        if name not in types:
            names = ", ".join(layer.name for layer in candidates) or "none"
            raise CompressError(f"--layers: no layer '{name}' in the TEST net of {model} (its "
                                f"Convolution / InnerProduct layers: {names})")
        if types[name] not in qcnn_layers.DEFAULTS:
            raise CompressError(f"--layers: layer '{name}' is a {types[name]} layer; Q-CNN "
                                "quantises Convolution and InnerProduct layers")
    return [(layer.name, layer.type) for layer in candidates if layer.name in wanted]


@dataclasses.dataclass
class Plan:
    spec: qcnn_layers.LayerView
    index: int                  # record index in the built nets
    dim: int
    codewords: int

    @property
    def name(self):
        return self.spec.name

    @property
    def file(self):
        return "layers/" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.name) + ".npz"


def make_plan(record, index, given, options):
    """The Plan of one layer: its view, D and K (per-layer values beat the global ones;
    a default or global D larger than the layer's inputs shrinks to them)."""
    try:
        spec = qcnn_layers.view(record)
    except qcnn_layers.UnsupportedLayer as e:
        raise CompressError(f"layer '{record.name}' ({record.layer.type}) cannot be "
                            f"quantised: {e}") from None
    own_dim, own_book = given
    check_values(f"--layers {spec.name}: D", own_dim, f"--layers {spec.name}: K", own_book)
    default_dim, default_book = qcnn_layers.DEFAULTS[spec.type]
    inputs = f"{spec.inputs} inputs" + (" per group" if spec.kernel else "")
    if own_dim is not None and own_dim > spec.inputs:
        raise CompressError(f"layer '{spec.name}': subspace dimension {own_dim} is more than "
                            f"its {inputs} (give 1..{spec.inputs})")
    dim = own_dim or min(options.subspace_dim or default_dim, spec.inputs)
    codewords = own_book or options.codebook or default_book
    points = spec.outputs * spec.offsets
    if codewords > points:
        log.warning("%s: %d codewords for %d sub-vectors per subspace: %d of them stay "
                    "unused (--layers %s:%d:%d would store less)", spec.name, codewords,
                    points, codewords - points, spec.name, dim, points)
    return Plan(spec, index, dim, codewords)
