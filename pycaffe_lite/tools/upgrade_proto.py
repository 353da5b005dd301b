"""Caffe's three upgrade tools, one command line each (the modules named after
them call :func:`run`).

    upgrade_net_proto_text   V0_NET_PROTO_FILE_IN NET_PROTO_FILE_OUT
    upgrade_net_proto_binary V0_NET_PROTO_FILE_IN NET_PROTO_FILE_OUT
    upgrade_solver_proto_text OLD_SOLVER_PROTO_FILE_IN SOLVER_PROTO_FILE_OUT

Each reads its input, upgrades it in the way Caffe upgrades files on reading
(:mod:`pycaffe_lite.io.upgrade`) and writes the current format atomically.
Exit status, as Caffe's tools: 0 when written (also for a file already up to
date, with an error logged), 1 when the upgrade met problems (the file is
still written) or could not be done (nothing written), 2 when the input cannot
be read as what the tool upgrades.  A command line that cannot be read exits
with 2, as every pycaffe_lite tool (Caffe's exit with 1 there).
"""
import logging

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.io import upgrade
from pycaffe_lite.tools import run_tool

log = logging.getLogger("pycaffe_lite")

ARGUMENTS = {
    "upgrade_net_proto_text": ("V0_NET_PROTO_FILE_IN", "NET_PROTO_FILE_OUT"),
    "upgrade_net_proto_binary": ("V0_NET_PROTO_FILE_IN", "NET_PROTO_FILE_OUT"),
    "upgrade_solver_proto_text": ("OLD_SOLVER_PROTO_FILE_IN", "SOLVER_PROTO_FILE_OUT"),
}
WHAT = {
    "upgrade_net_proto_text": "a net prototxt (V0, V1 or with deprecated fields)",
    "upgrade_net_proto_binary": "a binary caffemodel (V0, V1 or with deprecated fields)",
    "upgrade_solver_proto_text": "a solver prototxt (with the deprecated solver_type)",
}


def upgrade_file(prog, source, target):
    """Run tool ``prog`` on ``source`` -> ``target``; returns the exit status."""
    try:
        if prog == "upgrade_solver_proto_text":
            report = upgrade.upgrade_solver_file(source, target)
        else:
            report = upgrade.upgrade_net_file(source, target,
                                              binary=prog == "upgrade_net_proto_binary")
    except upgrade.UnreadableInput as e:
        log.error("%s: %s", prog, e)
        return 2
    except CaffeError as e:
        log.error("%s: %s; nothing written", prog, e)
        return 1
    return 1 if report.problems else 0


def run(prog, argv=None):
    """``main`` of tool ``prog`` (one of :data:`ARGUMENTS`)."""
    arguments = ARGUMENTS[prog]
    usage = (f"Upgrade {WHAT[prog]} to the current format\n"
             f"Usage:\n    {prog} [FLAGS] {' '.join(arguments)}\n")
    status = []
    run_result = run_tool(prog, usage, [], arguments, argv,
                          lambda args, flags: status.append(upgrade_file(prog, *args)))
    return run_result or (status[0] if status else 0)
