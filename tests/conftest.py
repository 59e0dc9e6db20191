import os
import shutil
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


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A cache folder holding the offline SmolLM2-135M, converted from its GGUF file once per test session
    (~20 s; 517 MB that would otherwise stay in ~/.cache/delrec). Skips, naming what is missing, without the
    offline extra."""
    from helpers import offline_lm_missing

    from delrec.config import LMConfig
    from delrec.lm.backbone import load_backbone

    why = offline_lm_missing()
    if why:
        pytest.skip(why)
    cache = tmp_path_factory.mktemp("delrec-cache")
    load_backbone(LMConfig(backbone="smollm2-offline", device="cpu", cache_dir=str(cache)))
    yield str(cache)
    shutil.rmtree(cache, ignore_errors=True)  # pytest keeps the last three sessions' temporary folders


@pytest.fixture
def smollm2(smollm2_cache):
    """A fresh SmolLM2 backbone (loading the converted folder takes a fraction of a second; stage 2 wraps
    the model it is given, so tests do not share one)."""
    from delrec.config import LMConfig
    from delrec.lm.backbone import load_backbone

    return load_backbone(LMConfig(backbone="smollm2-offline", device="cpu", cache_dir=smollm2_cache))
