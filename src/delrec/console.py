"""What a delrec command shows: progress bars with ETA and stage headers on stderr, the final table on stdout,
and warnings only where they concern the user.

The libraries under delrec (transformers, peft, torch, huggingface_hub) warn about their own deprecations
(`is_gradient_checkpointing` on every AdaLoRA model), print a weight-loading bar on every model load and log
notes meant for their own users. None of that is something a delrec user can act on, and it broke progress
bars mid-line, so commands turn it off. Warnings raised by delrec itself (a prompt cut to
lm.max_prompt_tokens, say) and the libraries' other warnings still show, as one line each above the bars.
`TRANSFORMERS_VERBOSITY=info` (or `warning`) and `HF_HUB_DISABLE_PROGRESS_BARS=0` bring the libraries'
output back.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

LIBRARIES = r"(transformers|peft|accelerate|huggingface_hub|torch|tokenizers|safetensors)(\..*)?$"
# Library warnings about delrec's own, deliberate use of them (not the user's settings).
NOT_FOR_USERS = (
    r"fan_in_fan_out is set to False",   # peft on GPT-2's Conv1D attention: it corrects the flag itself
)
_PACKAGE = str(Path(__file__).resolve().parent)


def quiet_libraries() -> None:
    """Install the filters above for this process (idempotent)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # else a fork after tokenizing warns
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
    for message in NOT_FOR_USERS:
        warnings.filterwarnings("ignore", message=message)
    if "transformers" in sys.modules:  # imported already (tests, notebooks): the env vars came too late
        from transformers.utils import logging as hf_logging

        if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
            hf_logging.set_verbosity_error()
        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
            hf_logging.disable_progress_bar()
    warnings.showwarning = show_warning


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """One line above the progress bars (tqdm.write), not the source line under a file path."""
    from tqdm.auto import tqdm

    ours = str(Path(filename).resolve()).startswith(_PACKAGE)
    origin = "" if ours else f" ({Path(filename).name}:{lineno})"
    tqdm.write(f"delrec: warning{origin}: {message}", file=file or sys.stderr)


def header(text: str) -> None:
    """A stage header (`== stage 1 (delrec): ...`), printed above any open progress bar."""
    from tqdm.auto import tqdm

    from delrec import dist

    if dist.is_main():
        tqdm.write(f"== {text}", file=sys.stderr)
