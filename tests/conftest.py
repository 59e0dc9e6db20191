import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from a second thread, and two threads stall badly when the other core is busy.
torch.set_num_threads(1)

SHARED = Path(os.environ.get("DELREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


@pytest.fixture
def shared_data():
    """Root of the real datasets; tests that need them skip with a message when they are absent."""
    if not SHARED.exists():
        pytest.skip(f"real datasets not found at {SHARED} (set DELREC_SHARED_DATA)")
    return SHARED
