from pathlib import Path

import pytest
import torch

from hyro_edu import paths


def test_environment_variables_win(monkeypatch, tmp_path):
    monkeypatch.setenv("HYRO_EDU_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("HYRO_EDU_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("HYRO_EDU_CHECKPOINTS", str(tmp_path / "k"))
    assert paths.data_root() == tmp_path / "d"
    assert paths.cache_dir() == tmp_path / "c"
    assert paths.checkpoint_dir() == tmp_path / "k"


def test_defaults_are_under_home(monkeypatch):
    for var in ("HYRO_EDU_DATA", "HYRO_EDU_CACHE", "HYRO_EDU_CHECKPOINTS"):
        monkeypatch.delenv(var, raising=False)
    home = Path.home()
    assert paths.data_root() == home / "hyro_edu_data"
    assert paths.cache_dir() == home / ".cache" / "hyro_edu"
    assert paths.checkpoint_dir() == home / "hyro_edu_checkpoints"
    monkeypatch.setenv("HYRO_EDU_DATA", "  ")
    assert paths.data_root() == home / "hyro_edu_data"


def test_a_failed_write_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "model.pt"
    paths.atomic_torch_save({"key": "old"}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        paths.atomic_torch_save({"key": "new"}, path)
    monkeypatch.undo()
    assert list(path.parent.iterdir()) == [path]
    assert torch.load(path, weights_only=True) == {"key": "old"}
