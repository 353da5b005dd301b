import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYCAFFE_LITE_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
FIXTURES = SHARED / "fixtures"


@pytest.fixture
def shared():
    if not SHARED.is_dir():
        pytest.skip(f"test material not found at {SHARED} (set PYCAFFE_LITE_SHARED)")
    return SHARED


def _backends():
    """NumPy always; CuPy when a CUDA device is usable, else a skip that says why."""
    from pycaffe_lite.backend import gpu_available
    yield pytest.param("numpy", id="numpy")
    yield pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not gpu_available(), reason="no CuPy with a usable CUDA device on this machine")])


@pytest.fixture(params=list(_backends()))
def xp(request):
    """The array module a layer test runs on (parametrised over backends)."""
    if request.param == "cupy":
        import cupy
        return cupy
    import numpy
    return numpy


@pytest.fixture(autouse=True)
def restore_logger():
    """Commands install the glog handler on the package logger; undo it after each test."""
    logger = logging.getLogger("pycaffe_lite")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture
def threads():
    """``threads(n)`` runs pycaffe_lite's own thread pool with n threads for the test."""
    from pycaffe_lite import parallel
    yield parallel.set_num_threads
    parallel.set_num_threads(parallel._default_threads())


def pytest_terminal_summary(terminalreporter):
    """One line per skip reason, with its count, above pytest's closing line."""
    reasons = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
            report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith("got empty parameter set") and not SHARED.is_dir():
            reason = f"no cases to run: test material not found at {SHARED}"
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            terminalreporter.line(f"{count:5d}  {reason}")


@pytest.fixture(autouse=True)
def upgrade_notes_again():
    """Upgrade notes are logged once per file per process; each test starts afresh."""
    from pycaffe_lite.io import upgrade
    upgrade.forget_notes()
    yield
