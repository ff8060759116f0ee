"""The shared training engine (``hyro_edu.training``): configs and ``--set``, run directories,
the interrupt guard, the command-line scaffolding; and the segmenter's command line built on it
(checks before Lightning loads, ``--help`` without torch)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import pytest

from hyro_edu.training.cli import parse_or_exit, run_or_exit
from hyro_edu.training.config import TrainConfig, parse_overrides, parse_value
from hyro_edu.training.runs import (RUN_FILE, InterruptGuard, RunConflict, TrainingInterrupted, check_run,
                                    claim_run, exit_code, read_run, write_json)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class _Config(TrainConfig):
    CONFIG_PACKAGE: ClassVar[str] = "hyro_edu.segmentation.configs"
    DEFAULT_CONFIG: ClassVar[str] = "toy"
    KEY_IGNORES: ClassVar[tuple] = ("name", "progress")
    KEY_OMIT_DEFAULTS: ClassVar[tuple] = ("added_later",)

    name: str = "a"
    max_steps: int = 10
    lr: float = 0.1
    eval_data: tuple = ("toy",)
    progress: bool = True
    added_later: Optional[str] = None

    def __post_init__(self):
        self.coerce_sequences()


# ----------------------------------------------------------------------------- configs
def test_values_are_read_as_yaml():
    assert parse_value("3e-3") == 3e-3 and parse_value("null") is None and parse_value("[1, 2]") == [1, 2]
    assert parse_overrides(["a=1", "b = x=y"]) == {"a": 1, "b": "x=y"}
    assert parse_overrides({"a": 1}) == {"a": 1} and parse_overrides(None) == {}
    with pytest.raises(ValueError, match="overrides must look like key=value"):
        parse_overrides(["a"])
    with pytest.raises(ValueError, match="override lr: cannot read"):
        parse_overrides(["lr=[1"])


def test_a_scalar_is_a_one_element_list_never_its_letters():
    assert _Config(eval_data="voc20").eval_data == ("voc20",)
    assert _Config(eval_data=["voc20", "toy"]).eval_data == ("voc20", "toy")
    assert _Config(eval_data=3).eval_data == (3,)
    with pytest.raises(ValueError, match="eval_data must be a list, got a mapping"):
        _Config(eval_data={"a": 1})
    assert _Config().to_dict()["eval_data"] == ["toy"]


def test_unknown_keys_are_named_with_a_suggestion(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['max_step'\]; did you mean 'max_steps'\?"):
        _Config.check_keys({"max_step": 5})
    with pytest.raises(ValueError, match=r"did you mean 'lr' for 'lrr', 'max_steps' for 'max_step'"):
        _Config.check_keys({"max_step": 5, "lrr": 1})
    with pytest.raises(ValueError, match=r"unknown config keys \['zzz'\]; allowed: \["):
        _Config.check_keys({"zzz": 5})
    path = tmp_path / "mine.yaml"
    path.write_text("max_steps: 3\nlr: 0.5\n")
    assert _Config.load(path, ["lr=0.25"]) == _Config(max_steps=3, lr=0.25)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        _Config.load(path)
    with pytest.raises(ValueError, match="did you mean 'toy'"):
        _Config.load("toyy")


def test_key_ignores_bookkeeping_and_fields_added_later_at_their_default():
    base = _Config()
    assert base.key() == _Config(name="b", progress=False).key()
    assert base.key() != _Config(lr=0.2).key()
    assert base.key() != _Config(added_later="x").key()
    # a field added later, at its default, leaves the keys of earlier runs as they were
    d = {k: v for k, v in base.to_dict().items() if k not in ("name", "progress", "added_later")}
    import hashlib

    want = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert base.key() == want


# ----------------------------------------------------------------------------- runs
def test_a_run_directory_belongs_to_one_key(tmp_path):
    run = tmp_path / "r"
    assert read_run(run) is None
    check_run(run, "k1", "r")  # nothing there yet
    claim_run(run, "k1", "r", {"lr": 1})
    assert read_run(run) == {"name": "r", "key": "k1", "config": {"lr": 1}}
    claim_run(run, "k1", "r", {"lr": 1})  # the same config: fine
    with pytest.raises(RunConflict, match="--retrain") as caught:
        claim_run(run, "k2", "r", {"lr": 2})
    assert "--set name=" in str(caught.value) and isinstance(caught.value, ValueError)
    claim_run(run, "k2", "r", {"lr": 2}, retrain=True)  # --retrain takes the directory over
    assert read_run(run)["key"] == "k2"
    assert [p.name for p in run.iterdir()] == [RUN_FILE]  # no temporary file left behind


def test_write_json_is_atomic_and_readable(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"miou": {"value": 41.5, "unit": "%"}})
    assert json.loads(path.read_text()) == {"miou": {"value": 41.5, "unit": "%"}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]


def test_training_interrupted_message_and_exit_code(tmp_path):
    err = TrainingInterrupted(signal.SIGINT, 48, tmp_path / "last.ckpt", 48)
    assert isinstance(err, KeyboardInterrupt) and err.exit_code == 130 == exit_code(signal.SIGINT)
    assert err.message().startswith("interrupted at step 48; run the same command to resume (SIGINT")
    assert "call train() with the same config again" in str(err) and err.hint in str(err)
    late = TrainingInterrupted(signal.SIGTERM, 48, tmp_path / "last.ckpt", 45)
    assert late.exit_code == 143
    assert late.message().startswith("interrupted at step 48; last checkpoint at step 45; run the same")
    early = TrainingInterrupted(signal.SIGTERM, 0, None, None, during="building the model")
    assert "no checkpoint yet" in early.message() and "during building the model" in early.message()


def test_the_guard_defers_one_signal_and_raises_on_a_second():
    before = signal.getsignal(signal.SIGTERM)
    with InterruptGuard() as guard:
        with pytest.raises(TrainingInterrupted) as caught:  # outside the loop: at once
            os.kill(os.getpid(), signal.SIGTERM)
        assert caught.value.signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    with InterruptGuard() as guard:
        guard.deferring = True
        os.kill(os.getpid(), signal.SIGINT)  # in the loop: only recorded
        assert guard.received == signal.SIGINT
        with pytest.raises(TrainingInterrupted):  # a second one does not wait
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with InterruptGuard() as guard:
            guard.deferring = True
            os.kill(os.getpid(), signal.SIGINT)
            assert guard.received is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- cli
def test_cli_errors_exit_2_and_interruptions_130_or_143(capsys):
    parser = argparse.ArgumentParser(prog="prog")
    with pytest.raises(SystemExit) as caught:
        parse_or_exit(parser, lambda: _Config.check_keys({"lrr": 1}))
    assert caught.value.code == 2 and "did you mean 'lr'" in capsys.readouterr().err

    def stopped():
        raise TrainingInterrupted(signal.SIGTERM, 7, Path("last.ckpt"), 7)

    assert run_or_exit(parser, stopped) == 143
    assert "interrupted at step 7; run the same command to resume" in capsys.readouterr().err
    assert run_or_exit(parser, lambda: 0) == 0


# ----------------------------------------------------------------------------- the segmenter's CLI
def test_every_finetuning_switch_is_a_training_key():
    from hyro_edu.clip.finetune import FinetuneConfig
    from hyro_edu.segmentation.train import SegTrainConfig, load_config

    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert names <= {f.name for f in dataclasses.fields(SegTrainConfig)}
    config = load_config(None, ["margin=dtype", "hclip_relation=gated", "hclip_vision_free=2", "mode=hclip"])
    ft = config.finetune_config()
    assert (ft.margin, ft.hclip_relation, ft.hclip_vision_free, ft.mode) == ("dtype", "gated", 2, "hclip")
    # at their defaults the new switches leave the keys of earlier runs unchanged (this is the
    # toy config's key from before they existed)
    assert load_config().key() == "7f09974d28494c4e"
    assert load_config(None, ["margin=dtype"]).key() != load_config().key()
    assert load_config(None, ["eval_data=voc20"]).eval_data == ("voc20",)


def test_the_command_line_checks_before_lightning_and_helps_without_torch(tmp_path):
    """One fresh interpreter: ``--help`` imports neither torch nor Lightning; every config error
    exits with status 2 and names the key, with Lightning still not imported."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / RUN_FILE).write_text(json.dumps({"name": "taken", "key": "another"}))
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from hyro_edu.segmentation.train.__main__ import main

        def run(*args):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(list(args))
                except SystemExit as e:
                    return e.code, err.getvalue()
            return 0, err.getvalue()

        assert run("--help")[0] == 0
        print("help", "torch" in sys.modules, "lightning" in sys.modules)
        for args in (["--set", "eval_data=imagenet"], ["--set", "model=ViT-B-61"],
                     ["--set", "toy_objects=3"], ["--set", "max_step=5"], ["--set", "margin=dtypo"],
                     ["--set", "name=taken", "--root", {str(tmp_path)!r}]):
            status, err = run(*args)
            print("case", status, err.strip().splitlines()[-1].replace(" ", "_"))
        print("lightning", "lightning" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "help False False"
    cases = [line.split(" ", 2) for line in lines if line.startswith("case")]
    assert [status for _, status, _ in cases] == ["2"] * 6
    messages = [message.replace("_", " ") for _, _, message in cases]
    assert "eval data entries must be 'toy' or one of" in messages[0] and "got 'imagenet'" in messages[0]
    assert "model must be 'hyro-tiny' or an open clip model" in messages[1] and "'ViT-B-16'?" in messages[1]
    assert "toy objects must be [lo, hi]" in messages[2] and "got [3]" in messages[2]
    assert "did you mean 'max steps'?" in messages[3]
    assert "margin must be one of" in messages[4]
    assert "--retrain" in messages[5] and "--set name=NEW" in messages[5]
    assert lines[-1] == "lightning False"
