import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def shared():
    """The real public samples in ../shared/data (never copied into the repo)."""
    if not SHARED.is_dir():
        pytest.skip(f"real QA samples not found at {SHARED} (they sit beside the repo in ../shared/data)")
    return SHARED
