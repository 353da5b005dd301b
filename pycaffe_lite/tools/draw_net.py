"""``draw_net``: BVLC's ``python/draw_net.py``, a net prototxt as a picture.

    draw_net NET.prototxt OUT.png [--rankdir LR|TB|BT|RL] [--phase TRAIN|TEST|ALL]
             [--display_lrm]

The format comes from the extension (png, svg, pdf, ...); needs pydot and
Graphviz's ``dot`` (a clear error names them when missing).  See
:mod:`pycaffe_lite.draw`.
"""
import argparse
import sys

from ..flags import run_reporting
from ..io import files
from ..layer import TEST, TRAIN


def main(argv=None):
    parser = argparse.ArgumentParser(prog="draw_net", description="Draw a network graph")
    parser.add_argument("input_net_proto_file", help="Input network prototxt file")
    parser.add_argument("output_image_file", help="Output image file")
    parser.add_argument("--rankdir", default="LR",
                        help="One of TB (top-bottom, i.e., vertical), RL (right-left, i.e., "
                             "horizontal), or another valid dot option; see "
                             "http://www.graphviz.org/doc/info/attrs.html#k:rankdir")
    parser.add_argument("--phase", default="ALL",
                        help="Which network phase to draw: can be TRAIN, TEST, or ALL. If "
                             "ALL, then all layers are drawn regardless of phase.")
    parser.add_argument("--display_lrm", action="store_true",
                        help="Use this flag to visualize the learning rate multiplier, when "
                             "non-zero, for the convolution and inner-product layers.")
    parser.add_argument("--debug", action="store_true",
                        help="Print the traceback of an error (pycaffe_lite extension).")
    args = parser.parse_args(argv)
    phases = {"TRAIN": TRAIN, "TEST": TEST, "ALL": None}
    if args.phase.upper() not in phases:
        parser.error(f"--phase must be TRAIN, TEST or ALL, got '{args.phase}'")
    from .. import draw

    def body():     # reads the prototxt only: no layer is built, no Python layer imported
        net = files.read_net(args.input_net_proto_file)
        print(f"Drawing net to {args.output_image_file}")
        draw.draw_net_to_file(net, args.output_image_file, args.rankdir,
                              phases[args.phase.upper()], args.display_lrm)
        return 0
    return run_reporting("draw_net", body, args)


if __name__ == "__main__":
    sys.exit(main())
