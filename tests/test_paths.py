from pathlib import Path

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
