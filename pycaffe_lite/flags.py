"""gflags-style command lines, shared by ``caffe_lite`` and the data tools.

Caffe's programs read their flags with gflags, so scripts written for them
spell flags in any of these ways, all accepted here:

* ``-name=value``, ``--name=value``, ``-name value``, ``--name value``;
* booleans: ``-name`` (true), ``-noname`` (false), ``--name=false``
  (``true``/``false``, ``t``/``f``, ``yes``/``no``, ``y``/``n``, ``1``/``0``);
* ``--`` ends the flags; flags may come before, between or after the
  positional arguments.

``-help`` / ``-h`` / ``-helpfull`` and ``-version`` set ``help`` and
``version``.  A command line that cannot be read raises :class:`UsageError`;
so does an ``int32`` flag whose value does not fit in 32 bits (as gflags
refuses it).

Errors: :func:`run_reporting` runs a program's body and turns every exception
into one line: :func:`report_error` prints a user's mistake, :func:`bug_message`
says an unexpected exception is a bug (or the user's Python layer failing);
the traceback only with ``--debug``, ``-v 1`` (glog's verbosity), ``GLOG_v=1``
or ``PYCAFFE_LITE_DEBUG=1`` (:func:`debug_requested`).
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
    Flag("v", int, 0, "glog's verbosity: 1 or more also logs DEBUG messages and prints the "
         "traceback of an error; default: $GLOG_v or 0."),
    Flag("debug", bool, False, "Print the traceback of an error (as -v 1 does; pycaffe_lite "
         "extension)."),
]

INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1

BUG_REPORT = ("please report it to the pycaffe_lite issue tracker with the command line and "
              "the output of the same command with --debug")

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
            value = int(text)
        except ValueError:
            raise UsageError(f"flag --{flag.name}: '{text}' is not an integer",
                             show_usage=False) from None
        check_int32(value, f"flag --{flag.name}")
        return value
    return text


def check_int32(value, what):
    """``value`` unless it does not fit in an int32 (Caffe's flags and proto fields)."""
    if not INT32_MIN <= value <= INT32_MAX:
        raise UsageError(f"{what}: {value} is out of range: an int32 is {INT32_MIN} to "
                         f"{INT32_MAX}", show_usage=False)
    return value


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


def _env_int(name):
    try:
        return int(os.environ.get(name, "").strip() or 0)
    except ValueError:
        return 0


def verbose_requested(flags=None):
    """glog's ``-v`` / ``GLOG_v`` >= 1: DEBUG messages are logged too."""
    return (getattr(flags, "v", 0) or 0) >= 1 or _env_int("GLOG_v") >= 1


def debug_requested(flags=None):
    """Whether an error should show its traceback: ``--debug`` or ``-v`` >= 1 in
    ``flags`` (a namespace from :func:`parse_flags`, or argparse's), ``GLOG_v`` >= 1
    or ``PYCAFFE_LITE_DEBUG=1``."""
    return (os.environ.get("PYCAFFE_LITE_DEBUG") == "1" or
            bool(getattr(flags, "debug", False)) or verbose_requested(flags))


def report_error(prog, message, usage=None, status=1, debug=None):
    """Write ``<prog>: error: <message>`` (and ``usage``) to stderr; returns ``status``.

    ``debug`` (default: :func:`debug_requested` from the environment) adds the
    traceback of the exception being handled, before the line.
    """
    if (debug if debug is not None else debug_requested()) and sys.exc_info()[0] is not None:
        traceback.print_exc()
    sys.stderr.write(f"{prog}: error: {message}\n")
    if usage:
        sys.stderr.write(f"\n{usage}\nRun '{prog} --help' to list the flags.\n")
    sys.stderr.flush()
    return status


def _our_dirs():
    """The folders of pycaffe_lite's own code (the package, its layers)."""
    from . import layers
    return tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                 for m in (sys.modules[__package__], layers))


def bug_message(exc):
    """The one line for ``exc``, an exception no check of ours caught.

    Raised in a Python layer's module (the user's code): an error there, named
    with its file and line.  Else a bug in pycaffe_lite: the exception, its
    message, the innermost place in our code it was raised, where to report it."""
    from .layers.python_layer import user_module_files
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    ours, users = _our_dirs(), user_module_files()
    innermost_first = list(traceback.walk_tb(exc.__traceback__))[::-1]
    place = innermost_first[0] if innermost_first else None    # none of ours: the innermost
    for frame, lineno in innermost_first:     # library frames (NumPy, the stdlib) skipped
        filename = frame.f_code.co_filename
        if os.path.abspath(filename) in users:
            layer = getattr(frame.f_locals.get("self"), "name", None)
            named = f"layer '{layer}' (type Python): " if isinstance(layer, str) else ""
            return f"{named}Python layer code failed: {detail} (at {filename}:{lineno})"
        if os.path.abspath(filename).startswith(ours):
            place = frame, lineno
            break
    at = (f" (at {os.path.basename(place[0].f_code.co_filename)}:{place[1]})"
          if place else "")
    return f"internal error, a bug in pycaffe_lite: {detail}{at}; {BUG_REPORT}"


def run_reporting(prog, run, flags, fail=None, usage_status=1):
    """``run()``'s exit status, every exception turned into one line on stderr.

    ``fail(message, status=, show_usage=, debug=)`` prints a user's error
    (default: :func:`report_error` without usage).  A usage error is the user's
    (``usage_status``), so is a CaffeError (status 1, or its ``exit_status``);
    Ctrl-C gives 130; memory or an OS error is the machine's (status 1); anything
    else is a bug in pycaffe_lite (:func:`bug_message`, status 1).  The traceback
    comes first only when :func:`debug_requested` (``flags``: the parsed flags).
    With ``flags.no_python_layers`` every Python layer is refused.
    """
    from .errors import CaffeError
    from .layers.python_layer import python_layers_allowed
    if fail is None:
        def fail(message, status=1, show_usage=False, debug=None):
            return report_error(prog, message, None, status, debug=debug)
    debug = debug_requested(flags)
    try:
        with python_layers_allowed(False if getattr(flags, "no_python_layers", False)
                                   else None):
            return run() or 0
    except UsageError as e:
        return fail(e, status=usage_status, show_usage=e.show_usage, debug=debug)
    except CaffeError as e:
        return fail(e, status=getattr(e, "exit_status", 1), debug=debug)
    except KeyboardInterrupt:
        return fail("interrupted", status=130, debug=debug)
    except MemoryError as e:
        return fail(f"out of memory: {e or 'an allocation failed'}", debug=debug)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return fail(f"{where}{e.strerror or e}", debug=debug)
    except Exception as e:  # a bug: one line, the traceback with --debug
        return fail(bug_message(e), debug=debug)
