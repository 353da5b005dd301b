"""upgrade_net_proto_binary: Caffe's tool of that name; see :mod:`pycaffe_lite.tools.upgrade_proto`."""
import sys

from pycaffe_lite.tools.upgrade_proto import run


def main(argv=None):
    return run("upgrade_net_proto_binary", argv)


if __name__ == "__main__":
    sys.exit(main())
