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
