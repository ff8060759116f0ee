"""HVSA's trainer (``hyro_edu.hvsa.train``) on the shared engine: a tiny toy run end to end, "load
if present, else train", resume after an interruption, config errors before anything heavy, the
command line.  Runs are tiny (a few steps on a few hundred cached toy scenes): these tests check
the plumbing and the metrics' ranges, not what HVSA learns (the notebook does that)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hyro_edu.hvsa.train import (ABLATIONS, PIXEL_ABLATIONS, DataNotPrepared, HVSATask, TrainingInterrupted,
                                  available_configs, load_config, lr_factor, train)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(toy_train=96, toy_test=48, batch_size=16, steps=6, warmup_steps=2, checkpoint_every=100,
            eval_batch_size=24, progress=False, toy_pretrain_steps=3)
TINY_PIXEL = dict(TINY, pixel_samples=16, batch_size=8, toy_pretrain_steps=0)


@pytest.fixture(autouse=True)
def _dirs(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hvsa_cache"  # toy scenes rendered once per session
    monkeypatch.setenv("HYRO_EDU_CACHE", str(cache))


def _in_unit(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_a_tiny_toy_run_reports_the_metrics_and_a_second_call_loads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HYRO_EDU_CHECKPOINTS", str(tmp_path))  # the default runs root
    config = load_config("toy", overrides=TINY)
    result = train(config)
    m = result["metrics"]
    assert {"map", "cmap", "cv", "cv_edges", "map_per_level", "kl", "hm"} <= set(m)
    assert all(_in_unit(m[k]) for k in ("map", "cmap", "cv", "cv_edges"))
    assert len(m["map_per_level"]) == 3 and all(_in_unit(v) for v in m["map_per_level"])
    assert math.isfinite(m["kl"]) and math.isfinite(m["hm"]) and m["hm"] >= 0
    assert result["loaded"] is False and result["resumed"] is False and result["steps"] == 6
    run = result["run_dir"]
    assert run.parent == tmp_path and run.name == config.resolved().name
    assert {"run.json", "metrics.json", "result.pt", "logs"} <= {p.name for p in run.iterdir()}
    assert list((run / "logs" / "csv").glob("version_0/metrics.csv"))

    # the stored metrics are those of the stored weights
    from hyro_edu.hvsa.train import build_data, evaluate, load_trained

    model = load_trained(result)
    again = evaluate(model, build_data(config), config.resolved())
    assert again["map"] == pytest.approx(m["map"]) and again["cv"] == pytest.approx(m["cv"])

    # the second call loads: nothing trains
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(HVSATask, "training_step", no_training)
    loaded = train(load_config("toy", overrides=TINY))
    assert loaded["loaded"] is True and loaded["resumed"] is False and loaded["metrics"] == m
    assert loaded["run_dir"] == run and loaded["seconds"] >= 0


def test_variants_get_their_own_run_and_the_ablations_are_overrides():
    names = {load_config("toy", overrides=v).resolved().name for v in ABLATIONS.values()}
    assert len(names) == 4
    assert load_config("toy", ["seed=1"]).resolved().name != load_config("toy").resolved().name
    assert load_config("toy", ["steps=50"]).steps == 50  # overrides as key=value strings
    assert set(PIXEL_ABLATIONS) == {"V1", "V3", "V4"}
    for v in PIXEL_ABLATIONS.values():
        load_config("toy_pixel", overrides=v)
    # vae_reduction is a head switch with its own runs (default: the summed reading)
    summed, averaged = load_config("toy"), load_config("toy", ["vae_reduction=mean"])
    assert summed.vae_reduction == "sum" and averaged.head_kwargs()["vae_reduction"] == "mean"
    assert summed.resolved().name != averaged.resolved().name
    with pytest.raises(ValueError, match=r"vae_reduction must be one of \('sum', 'mean'\)"):
        load_config("toy", {"vae_reduction": "avg"})


def test_an_interrupted_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    sig = signal.SIGINT
    before = signal.getsignal(sig)
    original = HVSATask.training_step

    def step(self, batch, batch_idx):
        if self.trainer.global_step == 2:
            os.kill(os.getpid(), sig)  # Ctrl-C during step 3
        return original(self, batch, batch_idx)

    config = load_config("toy", overrides={**TINY, "name": "cut"})
    HVSATask.training_step = step
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            train(config, root=tmp_path, evaluate=False)
    finally:
        HVSATask.training_step = original
    err = caught.value
    assert isinstance(err, TrainingInterrupted) and err.exit_code == 130
    assert (err.step, err.checkpoint_step) == (3, 3)  # the step in flight finished and was saved
    assert torch.load(err.checkpoint, weights_only=False)["global_step"] == 3
    assert signal.getsignal(sig) == before
    resumed = train(config, root=tmp_path, evaluate=False)
    assert resumed["resumed"] is True and resumed["resumed_from"] == 3 and resumed["steps"] == 6
    assert len(resumed["losses"]) == 3  # only the remaining steps ran
    straight = train(load_config("toy", overrides={**TINY, "name": "straight"}), root=tmp_path, evaluate=False)
    for k, v in straight["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=1e-5, atol=1e-6)


def test_a_tiny_pixel_run_reports_the_miou_per_level(tmp_path):
    result = train(load_config("toy_pixel", overrides=dict(TINY_PIXEL, steps=3)), root=tmp_path)
    levels = result["metrics"]["miou_levels"]
    assert len(levels) == 3 and all(_in_unit(v) for v in levels)


def test_config_errors_name_the_key_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['stepz'\]; did you mean 'steps'"):
        load_config("toy", ["stepz=5"])
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1, got 0"):
        load_config("toy", {"steps": 0})
    with pytest.raises(ValueError, match=r"components must be one of \('cls', 'vae', 'full'\)"):
        load_config("toy", {"components": "all"})
    with pytest.raises(ValueError, match=r"momentum must be a finite number >= 0 and <= 1"):
        load_config("toy", {"momentum": 1.5})
    with pytest.raises(ValueError, match=r"backbone must be a dense one"):
        load_config("toy_pixel", {"backbone": "toy_cnn"})
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, steps=10\]"):
        load_config("toy", {"steps": 10})
    with pytest.raises(ValueError, match=r"did you mean 'toy'"):
        load_config("toyy")
    with pytest.raises(ValueError, match=r"toy_pretrain_steps must be 0 unless backbone is 'toy_cnn'"):
        load_config("toy_pixel", {"toy_pretrain_steps": 10})
    with pytest.raises(ValueError, match=r"toy_pretrain_steps must be an integer >= 0"):
        load_config("toy", {"toy_pretrain_steps": -1})
    # a full-size dataset that is not prepared: the error names the key and the command, and
    # nothing is written
    config = load_config("imclef07a")
    with pytest.raises(DataNotPrepared, match=r"dataset 'imclef07a'") as caught:
        train(config, root=tmp_path / "runs", data_root=tmp_path / "data")
    assert "python -m data_scripts.prepare --datasets imclef07a" in str(caught.value)
    assert isinstance(caught.value, ValueError) and not (tmp_path / "runs").exists()


def test_shipped_configs_and_their_recipes():
    assert set(available_configs()) == {"toy", "toy_pixel", "imclef07a", "imclef07d", "tiered_imagenet_h",
                                        "cityscapes", "lip", "pascal_person_part"}
    toy = load_config("toy")
    assert (toy.d, toy.n, toy.visual_hidden, toy.semantic_hidden, toy.decoder_hidden) == (
        32, 32, (128, 128, 64), (128, 64), (64, 128, 128))
    assert toy.toy_pretrain_steps == 1500 and load_config("toy_pixel").toy_pretrain_steps == 0
    assert (toy.alpha, toy.beta, toy.gamma, toy.K, toy.c, toy.steps, toy.batch_size) == (0.2, 4, 1, 0.1, 1, 400, 64)
    city = load_config("cityscapes")
    assert (city.optimizer, city.batch_size, city.steps, city.crop_size) == ("sgd", 8, 80_000, (512, 1024))
    assert (load_config("lip").steps, load_config("pascal_person_part").batch_size) == (120_000, 16)
    tiered = load_config("tiered_imagenet_h")
    assert (tiered.lr, tiered.weight_decay, tiered.batch_size, tiered.steps) == (0.01, 5e-4, 4, 100_000)
    imclef = load_config("imclef07a")
    assert (imclef.optimizer, imclef.lr, imclef.batch_size, imclef.steps) == ("adam", 1e-4, 8, 600 * 875)
    from hyro_edu.hvsa import backbones
    from hyro_edu.hvsa.train import config as C

    assert C.BACKBONES == backbones.BACKBONES


def test_warmup_cosine_rises_from_the_start_value_to_the_peak_then_decays_to_zero():
    config = load_config("cityscapes", {"steps": 3000})
    f = lr_factor(config)
    values = [f(t) for t in range(3001)]
    assert values[0] == pytest.approx(2e-4 / 1e-3) and values[1000] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values[:1000], values[1:1001]))
    assert all(a >= b for a, b in zip(values[1000:], values[1001:])) and values[-1] == pytest.approx(0.0)
    clamped = lr_factor(load_config("cityscapes", {"steps": 3000, "lr_schedule": "cosine_clamped"}))
    assert clamped(0) == pytest.approx(0.2) and max(clamped(t) for t in range(3001)) <= 1.0


def test_the_command_line_helps_without_torch_and_exits_2_on_a_bad_key(tmp_path):
    code = textwrap.dedent("""
        import contextlib, io, sys
        from hyro_edu.hvsa.train.__main__ import main

        def run(*args):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(list(args))
                except SystemExit as e:
                    return e.code, err.getvalue()
            return 0, err.getvalue()

        status, _ = run("--help")
        print("help", status, "torch" in sys.modules)
        for args in (["--set", "stepz=5"], ["--config", "imclef07a"]):
            status, err = run(*args)
            print("case", status, repr(err))
        print("lightning", "lightning" in sys.modules)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", HYRO_EDU_DATA=str(tmp_path / "data"),
               HYRO_EDU_CHECKPOINTS=str(tmp_path / "runs"))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "help 0 False"
    cases = [line for line in lines if line.startswith("case")]
    assert cases[0].startswith("case 2 ") and "did you mean 'steps'" in cases[0]
    assert cases[1].startswith("case 2 ") and "dataset 'imclef07a'" in cases[1]
    assert "python -m data_scripts.prepare --datasets imclef07a" in cases[1]
    assert lines[-1] == "lightning False"


def test_the_toy_cnn_is_pretrained_once_deterministically_and_the_model_starts_from_it(monkeypatch):
    from hyro_edu.hvsa.backbones import build_backbone
    from hyro_edu.hvsa.train import build_data, build_model, pretrain

    config = load_config("toy", overrides=dict(TINY, toy_pretrain_steps=4))
    state = pretrain.pretrained_toy_cnn(config)
    fresh = build_backbone("toy_cnn").state_dict()
    assert state.keys() == fresh.keys()
    assert any(not torch.equal(state[k], fresh[k]) for k in state if state[k].is_floating_point())

    def no_training(*args, **kwargs):
        raise AssertionError("the cached weights were trained again")

    monkeypatch.setattr(pretrain, "pretrain_toy_cnn", no_training)
    cached = pretrain.pretrained_toy_cnn(config)  # from the cache
    assert all(torch.equal(cached[k], state[k]) for k in state)
    model = build_model(config, build_data(config).tree)
    assert all(torch.equal(model.backbone.state_dict()[k], state[k]) for k in state)
    monkeypatch.undo()

    # deterministic: the same steps and seed give the same weights, another seed others
    images = torch.randn(40, 3, 32, 32)
    leaves = (torch.rand(40, 54) < 0.05).float()
    a = pretrain.pretrain_toy_cnn(images, leaves, steps=2, seed=0)
    b = pretrain.pretrain_toy_cnn(images, leaves, steps=2, seed=0)
    c = pretrain.pretrain_toy_cnn(images, leaves, steps=2, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(ValueError, match=r"images must be \(N, 3, S, S\) and leaves \(N, K\)"):
        pretrain.pretrain_toy_cnn(images, leaves[:5], steps=1)
