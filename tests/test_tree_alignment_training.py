"""Tree alignment's trainer (``hyro_edu.tree_alignment.train``) on the shared engine: a tiny toy run per
variant end to end, "load if present, else train", resume after an interruption, config errors before
anything heavy, the command line.  Runs are tiny (a few steps, one or two shots, a randomly initialised
tiny CLIP): these tests check the plumbing and the metrics' ranges, not what the method learns."""
from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hyro_edu.tree_alignment.train import (VARIANTS, DataNotPrepared, TreeAlignmentTask, TrainingInterrupted,
                                           available_configs, load_config, lr_factor, train)

ROOT = Path(__file__).resolve().parents[1]
# 36 seen classes x 1 shot, batch 12: 3 steps an epoch; 1 warm-up epoch, then 2 cosine steps.
TINY = dict(shots=1, batch_size=12, steps=5, toy_test_per_class=1, clip_pretrained=None, progress=False,
            checkpoint_every=100, eval_batch_size=64)


@pytest.fixture(autouse=True)
def _dirs(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "tree_alignment_cache"  # toy scenes rendered once per session
    monkeypatch.setenv("HYRO_EDU_CACHE", str(cache))


def _in_range(m: dict) -> bool:
    return all(0.0 <= m[k] <= 100.0 for k in ("la", "hca", "mta")) and m["hca"] <= m["la"]


def test_the_variants_match_the_model_and_each_gets_its_own_run():
    from hyro_edu.tree_alignment import model as TAM
    from hyro_edu.tree_alignment.train import config as C

    assert VARIANTS == TAM.VARIANTS == C.VARIANTS
    assert {v: p["curv_version"] for v, p in TAM.VARIANT_PARTS.items()} == C.CURV_VERSIONS_BY_VARIANT
    names = {load_config("toy", {"variant": v}).resolved().name for v in VARIANTS}
    assert len(names) == len(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_tiny_toy_run_of_each_variant_reports_la_hca_mta_and_writes_its_files(variant, tmp_path):
    result = train(load_config("toy", {**TINY, "variant": variant}), root=tmp_path)
    m = result["metrics"]
    assert set(m) == {"base", "novel", "full"}
    assert [m[k]["num_samples"] for k in ("base", "novel", "full")] == [36, 18, 54]
    assert all(_in_range(m[k]) and m[k]["num_cuts"] == 25 for k in m)
    assert result["steps"] == 5 and len(result["losses"]) == 5 and all(math.isfinite(x) for x in result["losses"])
    run = result["run_dir"]
    assert {"run.json", "metrics.json", "result.pt", "logs", "cuts_base.json", "cuts_novel.json",
            "cuts_full.json"} <= {p.name for p in run.iterdir()}
    (log,) = (run / "logs" / "csv").glob("version_0/metrics.csv")
    with log.open(newline="") as fh:
        header = next(csv.reader(fh))
    hyperbolic = variant in ("hypv1", "hypv2", "full")
    assert {"curv/c_i", "curv/c_t", "curv/c_m"} <= set(header) if hyperbolic else "curv/c_i" not in header
    assert len(result["curvatures"]) == (5 if hyperbolic else 0)
    assert (run / "curvatures.csv").is_file() == hyperbolic
    for _, c_i, c_t, c_m in result["curvatures"]:
        assert 0.005 <= min(c_i, c_t, c_m) and max(c_i, c_t, c_m) <= 0.5
        if variant == "hypv1":
            assert c_i == c_t == c_m
        if variant == "full":  # derived: between 0.9 min and 1.1 max
            assert 0.9 * min(c_i, c_t) - 1e-6 <= c_m <= 1.1 * max(c_i, c_t) + 1e-6
    state = result["state"]
    assert any("prompt_learner" in k for k in state)
    assert any("cross_attn" in k for k in state) == (variant not in ("vanilla", "protect"))
    assert any("curv" in k for k in state) == hyperbolic


def test_a_second_call_loads_and_the_stored_metrics_are_those_of_the_stored_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HYRO_EDU_CHECKPOINTS", str(tmp_path))  # the default runs root
    config = load_config("toy", {**TINY, "variant": "full"})
    result = train(config)
    assert result["run_dir"].parent == tmp_path and result["loaded"] is False

    from hyro_edu.hierarchy.tree_cuts import load_cuts
    from hyro_edu.tree_alignment.train import build_data, evaluate, load_trained

    model = load_trained(result)
    data = build_data(config.resolved())
    cuts = {k: load_cuts(result["run_dir"] / f"cuts_{k}.json", data.evals[k].tree) for k in data.evals}
    again = evaluate(model, data, config.resolved(), cuts=cuts)
    for tree in again:
        for k in ("la", "hca", "mta"):
            assert again[tree][k] == pytest.approx(result["metrics"][tree][k])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(TreeAlignmentTask, "training_step", no_training)
    loaded = train(load_config("toy", {**TINY, "variant": "full"}))
    assert loaded["loaded"] is True and loaded["metrics"] == result["metrics"]


def test_an_interrupted_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    sig = signal.SIGINT
    before = signal.getsignal(sig)
    original = TreeAlignmentTask.training_step

    def step(self, batch, batch_idx):
        if self.trainer.global_step == 2:
            os.kill(os.getpid(), sig)  # Ctrl-C during step 3
        return original(self, batch, batch_idx)

    config = load_config("toy", {**TINY, "name": "cut"})
    TreeAlignmentTask.training_step = step
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            train(config, root=tmp_path, evaluate=False)
    finally:
        TreeAlignmentTask.training_step = original
    err = caught.value
    assert isinstance(err, TrainingInterrupted) and err.exit_code == 130
    assert (err.step, err.checkpoint_step) == (3, 3)
    saved = torch.load(err.checkpoint, weights_only=False)
    assert saved["global_step"] == 3 and len(saved["curvatures"]) == 3
    keys = set(saved["state_dict"])  # the trained tensors only, not the frozen CLIP
    assert keys and all(("prompt_learner" in k or "cross_attn" in k or "curv" in k) for k in keys)
    assert signal.getsignal(sig) == before
    resumed = train(config, root=tmp_path, evaluate=False)
    assert resumed["resumed"] is True and resumed["resumed_from"] == 3 and resumed["steps"] == 5
    assert len(resumed["losses"]) == 2 and [c[0] for c in resumed["curvatures"]] == [0, 1, 2, 3, 4]
    straight = train(load_config("toy", {**TINY, "name": "straight"}), root=tmp_path, evaluate=False)
    assert straight["state"].keys() == resumed["state"].keys()
    for k, v in straight["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(resumed["curvatures"]), torch.tensor(straight["curvatures"]))


def test_config_errors_name_the_key_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['shot'\]; did you mean 'shots'"):
        load_config("toy", ["shot=5"])
    with pytest.raises(ValueError, match=r"variant must be one of .*did you mean 'hypv1'"):
        load_config("toy", {"variant": "hyp_v1"})
    with pytest.raises(ValueError, match=r"c_image must lie in the clamp range \[curv_init/10, curv_init\*10\]"):
        load_config("toy", {"c_image": 0.9})
    with pytest.raises(ValueError, match=r"c_text must lie in the clamp range"):
        load_config("toy", {"curv_init": 0.5, "c_text": 0.025})
    with pytest.raises(ValueError, match=r"layers\[2\] must be a block index in \[0, 3\] \(hyro-tiny has 4"):
        load_config("toy", {"layers": [1, 2, 4]})
    with pytest.raises(ValueError, match=r"layers must be strictly increasing"):
        load_config("toy", {"layers": [2, 1, 3]})
    with pytest.raises(ValueError, match=r"prompt_depth must be at most 4"):
        load_config("toy", {"prompt_depth": 5})
    with pytest.raises(ValueError, match=r"train_classes must name at least one class \(an empty shot list"):
        load_config("toy", {"train_classes": []})
    with pytest.raises(ValueError, match=r"train_classes\[1\] must be a leaf of the toy tree, got 'red elipse'"):
        load_config("toy", {"train_classes": ["red circle", "red elipse"]})
    with pytest.raises(ValueError, match=r"shots must be an integer >= 1, got 0"):
        load_config("toy", {"shots": 0})
    with pytest.raises(ValueError, match=r"clip_pretrained 'toyworld' exists only for clip_model 'hyro-tiny'"):
        load_config("toy", {"clip_model": "ViT-B-16"})
    with pytest.raises(ValueError, match=r"did you mean 'cifar100'"):
        load_config("cifar10")
    # a full-size dataset that is not prepared: the error names the key and the command, nothing is written
    for name in ("cifar100", "sun", "imagenet", "rare_species"):
        with pytest.raises(DataNotPrepared, match=rf"dataset '{name}' is not prepared: run python -m "
                                                  rf"data_scripts.prepare --datasets {name}") as caught:
            train(load_config(name), root=tmp_path / "runs", data_root=tmp_path / "data")
        assert isinstance(caught.value, ValueError)
    assert not (tmp_path / "runs").exists()


def test_shipped_configs_and_their_recipes():
    assert set(available_configs()) == {"toy", "cifar100", "cifar100_1shot", "sun", "sun_1shot", "imagenet",
                                        "imagenet_1shot", "rare_species", "rare_species_1shot"}
    toy = load_config("toy")
    assert (toy.toy_image_size, toy.shots, toy.num_train_classes, toy.batch_size, toy.total_steps,
            toy.warmup_steps) == (64, 16, 36, 32, 360, 18)
    assert (toy.lr, toy.momentum, toy.warmup_lr, toy.clip_model, toy.clip_pretrained) == (
        0.02, 0.9, 1e-3, "hyro-tiny", "toyworld")
    assert (toy.c_image, toy.c_text, toy.c_inter, toy.curv_init, toy.layers, toy.prompt_depth) == (
        0.05, 0.025, 0.025, 0.05, (1, 2, 3), 2)
    assert load_config("toy", {"shots": 1}).total_steps == 20  # 36 // 32 = 1 step an epoch
    expected = {  # reference 4.7, MaPLe: curv_init, (c_i, c_t, c_m), s, lr, epochs, batch
        "cifar100": (0.05, (0.05, 0.025, 0.025), 1, 0.01, 200, 8),
        "cifar100_1shot": (0.5, (0.5, 0.5, 0.5), 10, 0.02, 200, 8),
        "sun": (0.05, (0.05, 0.05, 0.05), 1, 0.01, 200, 8),
        "sun_1shot": (0.05, (0.05, 0.025, 0.025), 1, 0.02, 200, 8),
        "imagenet": (0.05, (0.05, 0.025, 0.025), 1, 0.02, 10, 2),
        "imagenet_1shot": (0.5, (0.25, 0.5, 0.25), 1, 0.02, 10, 2),
        "rare_species": (0.05, (0.05, 0.025, 0.025), 1, 0.03, 10, 8),
        "rare_species_1shot": (0.05, (0.05, 0.025, 0.025), 1, 0.02, 10, 8),
    }
    for name, (ci, cs, s, lr, epochs, batch) in expected.items():
        c = load_config(name)
        assert (c.curv_init, (c.c_image, c.c_text, c.c_inter), c.scale_image, c.scale_text, c.lr, c.epochs,
                c.batch_size) == (ci, cs, s, s, lr, epochs, batch), name
        assert (c.shots, c.variant, c.clip_model, c.layers, c.prompt_depth, c.momentum) == (
            1 if name.endswith("1shot") else 16, "full", "ViT-B-16", (4, 7, 11), 3, 0.0)
    assert load_config("cifar100").total_steps == 200 * (100 * 16 // 8)  # the few-shot setting: every class
    assert load_config("cifar100", {"train_classes": "base"}).total_steps == 200 * (50 * 16 // 8)  # base-to-novel


def test_warmup_is_constant_then_the_cosine_decays_monotonically_to_zero():
    config = load_config("toy")
    f = lr_factor(config)
    values = [f(t) for t in range(config.total_steps + 1)]
    assert all(v == pytest.approx(1e-3 / 0.02) for v in values[:18]) and values[18] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[18:], values[19:])) and values[-1] == pytest.approx(0.0)


def test_few_shot_sampling_and_the_evaluation_trees():
    from hyro_edu.data import taxonomic_datasets as td
    from hyro_edu.hierarchy.taxonomies import toyworld_hierarchy
    from hyro_edu.tree_alignment.train import few_shot_indices, subtree

    assert few_shot_indices is td.few_shot_indices  # one NshotSampler rule, the data layer's
    labels = torch.tensor([0, 1, 0, 1, 0, 2, 1, 0, 2])
    idx = few_shot_indices(labels, 2, seed=0)
    assert labels[idx].tolist() == [0, 0, 1, 1, 2, 2]
    assert idx == few_shot_indices(labels, 2, seed=0)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(0))  # class 0, seed 0 + 0
    assert idx[:2] == torch.tensor([0, 2, 4, 7])[perm[:2]].tolist()
    full = toyworld_hierarchy()
    from hyro_edu.data.toyworld import ToyWorld

    world = ToyWorld(64)
    base = subtree(full, [world.class_names[k] for k in world.seen_classes])
    novel = subtree(full, [world.class_names[k] for k in world.unseen_classes])
    assert (len(base), len(base.internal_nodes), max(base.depths)) == (49, 13, 3)
    assert (base.num_labels, novel.num_labels) == (36, 18)
    with pytest.raises(ValueError, match=r"leaf_names\[0\] must be a leaf of the tree, got 'circle'"):
        subtree(full, ["circle"])


def test_the_command_line_helps_without_torch_and_exits_2_on_a_bad_key(tmp_path):
    code = textwrap.dedent("""
        import contextlib, io, sys
        from hyro_edu.tree_alignment.train.__main__ import main

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
        for args in (["--set", "shot=5"], ["--config", "sun"], ["--set", "layers=[1,2,9]"]):
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
    assert cases[0].startswith("case 2 ") and "did you mean 'shots'" in cases[0]
    assert cases[1].startswith("case 2 ") and "python -m data_scripts.prepare --datasets sun" in cases[1]
    assert cases[2].startswith("case 2 ") and "layers[2] must be a block index" in cases[2]
    assert lines[-1] == "lightning False"


def test_the_model_trains_exactly_the_prompts_the_cross_attention_and_the_curvatures():
    # design notes §2: tiny CLIP, J = 2: prompts 8,576; cross-attention 3E² + 3E = 12,480 (E = 64);
    # one curvature (learn_common), two (learn2derive1) or three (learn3).  ViT-B/16, J = 3: 1,972,994
    # for the full method (checked by benchmarks/bench_tree_alignment_step.py --size full).
    from hyro_edu.clip.tiny import build_tiny_clip
    from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree
    from hyro_edu.hierarchy.taxonomies import toyworld_hierarchy
    from hyro_edu.tree_alignment.model import TreeAlignmentModel

    clip, tree = build_tiny_clip(seed=0), TaxonomicTree(toyworld_hierarchy())
    counts = {"vanilla": 8576, "protect": 8576, "sym": 21056, "euc": 21056, "hypv1": 21057, "hypv2": 21059,
              "full": 21058}
    for variant, count in counts.items():
        model = TreeAlignmentModel(clip, tree, variant=variant, seed=0)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count, variant
        assert set(model.trainable_state()) == {n for n, p in model.named_parameters() if p.requires_grad}
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 5, 17, 53])
    out = model(images, labels, generator=torch.Generator().manual_seed(0))
    assert {"loss", "dtl", "ncl", "align", "c_i", "c_t", "c_m"} <= set(out) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.curvatures.log_curv_image.grad is not None and model.clip.model.visual.proj.grad is None
    assert model.scores(images).shape == (4, 66)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the hyperbolic maths stays in float32
        half = model(images, labels, generator=torch.Generator().manual_seed(0))
    assert half["align"].dtype == torch.float32 and half["c_m"].dtype == torch.float32
    assert torch.isfinite(half["loss"])
    with pytest.raises(ValueError, match=r"labels must be leaf labels of the tree"):
        model(images, torch.tensor([0, 1, 2, 54]))
    with pytest.raises(ValueError, match=r"layers\[2\] must be an integer"):
        TreeAlignmentModel(clip, tree, layers=(1, 2, 4))
