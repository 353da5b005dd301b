"""gflags-style command lines, shared by ``caffe_lite`` and the data tools.

Caffe's programs read their flags with gflags, so scripts written for them
spell flags in any of these ways, all accepted here:

* ``-name=value``, ``--name=value``, ``-name value``, ``--name value``;
* booleans: ``-name`` (true), ``-noname`` (false), ``--name=false``
  (``true``/``false``, ``t``/``f``, ``yes``/``no``, ``y``/``n``, ``1``/``0``);
* ``--`` ends the flags; flags may come before, between or after the
  positional arguments.

``-help`` / ``-h`` / ``-helpfull`` and ``-version`` set ``help`` and
``version``.  A command line that cannot be read raises :class:`UsageError`.
"""
import collections
import os
import sys
import traceback

Flag = collections.namedtuple("Flag", "name type default help")

# glog's flags, which Caffe users pass to every program; we always log to stderr.
GLOG_FLAGS = [
    Flag("minloglevel", int, None, "Log messages at or above this level (0 INFO, "
         "1 WARNING, 2 ERROR, 3 FATAL); default: $GLOG_minloglevel or 0."),
    Flag("logtostderr", bool, False, "Accepted for compatibility; logs go to stderr."),
    Flag("alsologtostderr", bool, False, "Accepted for compatibility; logs go to stderr."),
]

SPELLING_NOTE = ("Flags may be written as in Caffe (-flag=value, -flag value, -flag and -noflag "
                 "for booleans) or with two dashes (--flag=value, --flag value, --flag, "
                 "--noflag); a '-' in a flag's name reads as '_' (--batch-size is -batch_size). "
                 "Flags may come before or after the arguments; '--' ends them.")

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_TYPE_NAMES = {str: "string", int: "int32", bool: "bool"}


class UsageError(Exception):
    """A command line that cannot run; reported with the usage text.

    ``show_usage=False`` for a flag whose value is wrong: the usage would not help.
    """

    def __init__(self, message, show_usage=True):
        super().__init__(message)
        self.show_usage = show_usage


def _convert(flag, text):
    if flag.type is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise UsageError(f"flag --{flag.name}: '{text}' is not a boolean (true or false)",
                         show_usage=False)
    if flag.type is int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"flag --{flag.name}: '{text}' is not an integer",
                             show_usage=False) from None
    return text


def parse_flags(argv, flags):
    """``(positional args, namespace)`` from ``argv`` as gflags reads it.

    ``flags``: the :class:`Flag` s the program knows.  The namespace holds
    one value per flag (its default when not given) and ``help``, ``version``.
    """
    known = {flag.name: flag for flag in flags}
    values = {name: flag.default for name, flag in known.items()}
    values["help"] = values["version"] = False
    positional = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, eq, text = body.partition("=")
        name = name.replace("-", "_")  # gflags treats --a-b as --a_b
        if name in ("help", "h", "helpfull", "version"):
            values["version" if name == "version" else "help"] = True
            continue
        flag = known.get(name)
        if flag is None and name.startswith("no") and not eq:
            negated = known.get(name[2:])
            if negated is not None and negated.type is bool:
                values[negated.name] = False
                continue
        if flag is None:
            raise UsageError(f"unknown command line flag '{name}'")
        if flag.type is bool and not eq:
            values[name] = True
            continue
        if not eq:
            if i >= len(args):
                raise UsageError(f"flag '{arg}' is missing its argument")
            text = args[i]
            i += 1
        values[name] = _convert(flag, text)
    return positional, collections.namedtuple("Flags", values)(**values)


def describe_flags(flags):
    """The ``Flags:`` section of ``--help``, one line a flag as gflags prints it."""
    lines = ["  Flags:"]
    for flag in flags:
        default = flag.default
        shown = ('"%s"' % default if flag.type is str else
                 str(default).lower() if flag.type is bool else
                 "" if default is None else str(default))
        lines.append(f"    -{flag.name} ({flag.help}) type: {_TYPE_NAMES[flag.type]} "
                     f"default: {shown}")
    return "\n".join(lines) + "\n"


def report_error(prog, message, usage=None, status=1):
    """Write ``<prog>: error: <message>`` (and ``usage``) to stderr; returns ``status``.

    ``PYCAFFE_LITE_DEBUG=1`` adds the traceback of the exception being handled.
    """
    if os.environ.get("PYCAFFE_LITE_DEBUG") == "1":
        traceback.print_exc()
    sys.stderr.write(f"{prog}: error: {message}\n")
    if usage:
        sys.stderr.write(f"\n{usage}\nRun '{prog} --help' to list the flags.\n")
    sys.stderr.flush()
    return status
