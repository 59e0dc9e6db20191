"""Bit-identical training on CPU for the same seed and the same torch thread count.

Why: with more than one intra-op thread, CPU `index_put_(accumulate=True)` on float tensors sums with
atomic float adds from several threads, so the order of the additions (and the last bits of the sum)
changes from run to run. The scorer's backward pass goes through such an op wherever one prompt's rows are
gathered for several candidates (`cache.batch_select_indices`, `hidden[prompt_of]`): two same-seed runs
differed by ~1e-7 in the soft prompt and ~1e-6 in the adapters. Deterministic mode makes torch take the
serial kernel instead; the forward pass and everything else were already run-to-run identical.

A different thread count still changes the rounding of parallel reductions (matmul, sum): runs are
bit-identical only at the same `torch.get_num_threads()`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def deterministic_on_cpu(device: torch.device | str):
    """Deterministic torch kernels inside the block when training on CPU; the caller's settings after it.

    warn_only: an op without a deterministic CPU kernel warns instead of stopping a run. Not used on GPUs,
    where deterministic mode needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts and costs speed.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = False  # filling every torch.empty with NaN only costs time here
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        det.fill_uninitialized_memory = before[2]
