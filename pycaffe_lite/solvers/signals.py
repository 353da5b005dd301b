"""SIGINT / SIGHUP during training (Caffe's ``util/signal_handler.cpp``).

The handlers only note that a signal arrived; the solver asks :meth:`check`
once per iteration (and per test batch) and gets the action configured for
that signal, once per signal received::

    with SignalHandler(sigint_effect="stop", sighup_effect="snapshot") as handler:
        solver.action_request = handler.check
        solver.solve()
"""
import signal

from ..errors import CaffeError
from .solver import SolverAction

EFFECTS = {"stop": SolverAction.STOP, "snapshot": SolverAction.SNAPSHOT,
           "none": SolverAction.NONE}


def effect(name, flag="sigint_effect"):
    """The SolverAction that ``name`` ('stop', 'snapshot' or 'none') means."""
    try:
        return EFFECTS[name]
    except KeyError:
        raise CaffeError(f"invalid {flag} '{name}': use stop, snapshot or none") from None


class SignalHandler:
    """Installs SIGINT (and SIGHUP where the platform has it) handlers while active.

    The previous handlers are put back by :meth:`close` (or leaving the
    ``with`` block).  Must be created in the main thread (Python's rule).
    """

    def __init__(self, sigint_effect="stop", sighup_effect="snapshot"):
        self.sigint_effect = effect(sigint_effect, "sigint_effect") if isinstance(
            sigint_effect, str) else sigint_effect
        self.sighup_effect = effect(sighup_effect, "sighup_effect") if isinstance(
            sighup_effect, str) else sighup_effect
        self._got_sigint = self._got_sighup = False
        self._previous = {}
        self._install(signal.SIGINT)
        if hasattr(signal, "SIGHUP"):
            self._install(signal.SIGHUP)

    def _install(self, signum):
        self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT:
            self._got_sigint = True
        else:
            self._got_sighup = True

    def check(self):
        """The action requested since the last call (SIGHUP first, as Caffe)."""
        if self._got_sighup:
            self._got_sighup = False
            return self.sighup_effect
        if self._got_sigint:
            self._got_sigint = False
            return self.sigint_effect
        return SolverAction.NONE

    __call__ = check

    def close(self):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
