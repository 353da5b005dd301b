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

:func:`upgrade_net_file` and :func:`upgrade_solver_file` do the work of one
tool run; ``caffe_lite upgrade`` calls them too.
"""
import logging

from pycaffe_lite.errors import CaffeError, ParseError
from pycaffe_lite.io import files, upgrade
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


class UnreadableInput(ParseError):
    """The file given to an upgrade tool cannot be read as what the tool upgrades
    (Caffe's tools exit with status 2 then)."""


def _read_for_tool(reader, source):
    try:
        return reader(source)
    except ParseError as e:
        raise UnreadableInput(str(e)) from None


def upgrade_net_file(source, target, binary):
    """Caffe's ``upgrade_net_proto_text`` (``binary`` False) / ``_binary`` (True).

    Reads ``source``, upgrades it and writes ``target`` (atomically) in the
    current format, as text or binary like the input.  Returns the
    :class:`~pycaffe_lite.io.upgrade.Report`; like Caffe, the file is written
    even when the report lists problems, and an up-to-date file is copied with
    an error logged.
    """
    net, encoding = _read_for_tool(files.read_net_param, source)
    wanted = "binary" if binary else "text"
    if encoding != wanted:
        other = "text" if binary else "binary"
        what = "a text prototxt" if encoding == "text" else "a binary caffemodel"
        raise UnreadableInput(f"{source}: {what}, not a {wanted} one; use "
                              f"upgrade_net_proto_{other} (caffe_lite upgrade net_{other})")
    if not upgrade.net_needs_upgrade(net):
        log.error("File already in latest proto format: %s", source)
        report = upgrade.Report([], [])
    else:
        log.info("Attempting to upgrade input file specified using deprecated formats: %s",
                 source)
        report = upgrade.upgrade_net_as_needed(net, source, weights=binary)
        upgrade.log_problems(report, source)
        if report.problems:
            log.error("Encountered error(s) while upgrading prototxt; see details above.")
        else:
            log.info("Successfully upgraded %s (%s)", source, ", ".join(report.steps))
    if binary:
        files.write_binary_proto(target, net)
    else:
        files.write_text_proto(target, net)
    log.info("Wrote upgraded NetParameter %s proto to %s", wanted, target)
    return report


def upgrade_solver_file(source, target):
    """Caffe's ``upgrade_solver_proto_text``: returns the
    :class:`~pycaffe_lite.io.upgrade.Report`."""
    solver = _read_for_tool(files.read_solver_param, source)
    if not upgrade.solver_needs_upgrade(solver):
        log.error("File already in latest proto format: %s", source)
        report = upgrade.Report([], [])
    else:
        log.info("Attempting to upgrade input file specified using deprecated 'solver_type' "
                 "field (enum)': %s", source)
        report = upgrade.upgrade_solver_as_needed(solver, source)
        log.info("Successfully upgraded file specified using deprecated 'solver_type' field "
                 "(enum) to 'type' field (string).")
    files.write_text_proto(target, solver)
    log.info("Wrote upgraded SolverParameter text proto to %s", target)
    return report


def upgrade_file(prog, source, target):
    """Run tool ``prog`` on ``source`` -> ``target``; returns the exit status."""
    try:
        if prog == "upgrade_solver_proto_text":
            report = upgrade_solver_file(source, target)
        else:
            report = upgrade_net_file(source, target, binary=prog == "upgrade_net_proto_binary")
    except UnreadableInput as e:
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
