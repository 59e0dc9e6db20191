"""File modes, and messages that name what is wrong: an encoding, a missing file, a stale teacher."""

from __future__ import annotations

import os
import urllib.request

import pytest

from delrec import DelrecError
from delrec.config import DataConfig
from delrec.data import prepare as prep
from delrec.data.formats import read_dataset
from delrec.io import atomic_write_text

U_DATA = "".join(f"{u}\t{i}\t5\t{10 * u + i}\n" for u in (1, 2) for i in range(1, 6))
U_ITEM = "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||url\n" for i in range(1, 6))


@pytest.fixture
def umask_027():
    before = os.umask(0o027)
    yield
    os.umask(before)


def test_atomic_writes_respect_the_umask(tmp_path, umask_027):
    atomic_write_text(tmp_path / "metrics.json", "{}\n")
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    with open(tmp_path / "plain.txt", "w") as f:  # what a plain open() makes under the same umask
        f.write("x")
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])  # with and without a byte-order mark
def test_a_utf16_item_file_is_named_as_utf16(tmp_path, encoding):
    (tmp_path / "u.data").write_text(U_DATA)
    (tmp_path / "u.item").write_bytes(U_ITEM.encode(encoding))
    with pytest.raises(DelrecError) as err:
        read_dataset(DataConfig(dataset="ml-100k", format="movielens-100k"), tmp_path)
    msg = str(err.value)
    assert "UTF-16" in msg and "u.item" in msg and "latin-1" in msg and ":5" not in msg and "\n" not in msg


def test_the_missing_ml100k_file_is_named(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    (tmp_path / "u.data").write_text(U_DATA)
    with pytest.raises(DelrecError) as err:
        prep.prepare(DataConfig(dataset="ml-100k", data_dir=str(tmp_path)))
    assert str(err.value).startswith(f"ml-100k: u.item not found in {tmp_path} ")
    assert (tmp_path / "u.data").read_text() == U_DATA  # what was there is left alone


def test_recommend_refuses_a_before_targets_teacher_trained_with_other_settings(tmp_path):
    """delrec+user's projector was trained on one teacher's states: `delrec recommend` must not silently load
    a before-targets teacher that a run with other teacher settings left in the folder."""
    from delrec.config import RunConfig
    from delrec.recommend import run_user_teacher
    from delrec.runs import RunDir, mark_done

    cfg = RunConfig()
    cfg.eval.projector_teacher = "before-targets"
    run = RunDir(tmp_path)
    folder = run.hint_teacher_dir(cfg)
    folder.mkdir(parents=True)
    with pytest.raises(DelrecError, match="missing"):
        run_user_teacher(tmp_path, cfg, {})
    hidden = cfg.teacher.hidden
    cfg.teacher.hidden = 2 * hidden  # a teacher with other settings leaves its marker in the folder
    mark_done(folder, {"model": cfg.teacher.models[0]}, run.hint_teacher_key(cfg))
    cfg.teacher.hidden = hidden
    with pytest.raises(DelrecError, match="other teacher settings") as err:
        run_user_teacher(tmp_path, cfg, {})
    assert "teacher/" + folder.name in str(err.value)
