"""What can be checked before a run trains anything: the devices, the data folder, the LM backbone.

Teachers train for minutes before the LM is first loaded, so a backbone folder that does not exist (or a
missing offline package) would otherwise fail only after them. The config's own values are checked when it is
read (`delrec.config`); the dataset's files are read, with errors naming file and line, right after this.
"""

from __future__ import annotations

from delrec.config import RunConfig
from delrec.device import resolve_device
from delrec.methods import run_methods


def needs_lm(cfg: RunConfig, until: str = "evaluate") -> bool:
    """Whether a run up to `until` loads the LM (`teach`, or only popularity and teachers, do not)."""
    return until != "teach" and bool(run_methods(cfg.eval))


def check_before_training(cfg: RunConfig, until: str = "evaluate") -> None:
    """One-line `DelrecError` for anything that would stop the run later: `teacher.device` / `lm.device`
    (CUDA asked for where there is none), the data folder, and, when the LM is used, `lm.backbone`."""
    from delrec.data.registry import check_data_dir

    resolve_device(cfg.teacher.device, "teacher.device")
    check_data_dir(cfg.data)
    if needs_lm(cfg, until):
        from delrec.lm.backbone import check_backbone

        resolve_device(cfg.lm.device, "lm.device")
        check_backbone(cfg.lm)
