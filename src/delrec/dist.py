"""Process-group helpers: the same code runs alone, under `torchrun` or under `accelerate launch`."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist
from accelerate import PartialState


def state() -> PartialState:
    # PartialState reads the torchrun / accelerate environment and initialises gloo/nccl once.
    return PartialState(cpu=not torch.cuda.is_available())


def world() -> tuple[int, int]:
    s = state()
    return s.process_index, s.num_processes


def is_main() -> bool:
    return state().is_main_process


def all_reduce_mean_(tensors) -> None:
    """Average gradients (or any tensors) across processes in place; a no-op when alone."""
    _, n = world()
    if n == 1:
        return
    for t in tensors:
        if t is not None:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(n)


def global_mean(value: float) -> float:
    """A per-process number (a logged loss) averaged over processes."""
    t = torch.tensor([float(value)], dtype=torch.float64)
    all_reduce_mean_([t])
    return float(t)


def gather_rows(rows: list, n_total: int) -> list:
    """Undo round-robin sharding (`rows[rank::world]`) of evaluation work."""
    _, n = world()
    if n == 1:
        return rows
    parts: list = [None] * n
    dist.all_gather_object(parts, rows)
    out = [None] * n_total
    for r, part in enumerate(parts):
        out[r::n] = part
    return out


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


@contextmanager
def main_takes_all_threads():
    """While only the main process works and the others wait in a barrier (teacher training), give it their
    CPU threads: torchrun starts every process with one thread, and a waiting gloo process uses no CPU, so
    otherwise the teachers train on one core of two (measured: 1.6-2.3x slower, benchmarks/BENCHMARKS.md)."""
    rank, n = world()
    if n == 1 or rank != 0 or torch.cuda.is_available():
        yield
        return
    own = torch.get_num_threads()
    torch.set_num_threads(own * n)
    try:
        yield
    finally:
        torch.set_num_threads(own)
