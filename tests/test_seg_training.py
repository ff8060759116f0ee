"""Training: configs and presets, the optimiser, the resumable data stream, checkpoints and resume."""
from __future__ import annotations

import math

import pytest
import torch

from hyro_edu.finetune import FinetuneConfig
from hyro_edu.hyperbolic_adapter import parameter_counts
from hyro_edu.seg_training import (
    OFFICIAL_CLIP_MULTIPLIERS,
    ResumableSampler,
    SegTrainConfig,
    SimulatedInterruption,
    ToySegmentationData,
    available_configs,
    build_task,
    cosine_lambda,
    load_config,
    load_trained,
    main,
    parameter_groups,
    train,
)
from hyro_edu.toyworld import ToyWorld

# A random-weight tiny CLIP (no first-use pretraining), 32-px crops, batch 2: a few seconds per run.
FAST = dict(pretrained=None, image_size=32, batch_size=2, max_steps=4, checkpoint_every=1, toy_eval_images=4,
            progress=False, toy_objects=[1, 2])


def fast_config(**kw) -> SegTrainConfig:
    return load_config(None, {**FAST, **kw})


# ----------------------------------------------------------------------------- configs
def test_shipped_configs_load_and_resolve():
    assert available_configs() == ["official_vitb16", "paper_vitb16", "toy"]
    default = load_config()
    assert default == load_config("toy")
    assert default.model == "hyro-tiny" and default.train_data == "toy" and default.eval_data == ("toy",)
    official = load_config("official_vitb16").resolved()
    paper = load_config("paper_vitb16").resolved()
    assert (official.c_text, official.c_vision, official.batch_size, official.max_steps) == (1.0, 0.01, 4, 80_000)
    assert (paper.c_text, paper.c_vision, paper.batch_size, paper.max_steps) == (0.01, 0.01, 8, 40_000)
    assert (official.scale_block, official.rotation_block) == (128, 256)
    assert (paper.scale_block, paper.rotation_block) == (256, 256)  # the paper: "both block sizes 256"
    assert official.clip_lr_multiplier == 0.025 and paper.clip_lr_multiplier == 1.0
    assert official.lr * official.clip_lr_multiplier == pytest.approx(5e-6)  # HyRo's effective CLIP-side lr
    # the official preset reproduces the fine-tuning whose ViT-B/16 counts test_finetune asserts
    assert official.finetune_config() == FinetuneConfig(mode="hyro")
    for mode, mult in OFFICIAL_CLIP_MULTIPLIERS.items():
        assert load_config("official_vitb16", {"mode": mode}).resolved().clip_lr_multiplier == mult
    # HyperCLIP keeps its 128-blocks under the paper preset; only HyRo's S is 256
    assert load_config("paper_vitb16", {"mode": "hyperclip"}).resolved().scale_block == 128
    # explicit values win over the preset
    assert load_config("official_vitb16", {"c_text": 0.5}).resolved().c_text == 0.5


def test_paper_and_official_hyro_differ_in_trainable_count_on_vit_b16():
    # ViT-B/16: text 12 x 512, vision 12 x 768; S and R on each of Q, K, V.
    def total(scale_block):
        n = 0
        for width in (512, 768):
            c = parameter_counts(width, scale_block=scale_block, rotation_block=256)
            n += 12 * 3 * c["total"]
        return n

    assert total(128) == 17_694_720  # the official code's count
    assert total(256) > total(128)


def test_config_overrides_and_bad_input():
    assert load_config(None, ["mode=hyperclip", "max_steps=7"]).mode == "hyperclip"
    assert load_config(None, ["max_steps=7"]).max_steps == 7
    assert load_config(None, ["lr=3e-3"]).lr == 3e-3  # YAML 1.1 alone would read a string
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(None, ["learning_rate=1"])
    with pytest.raises(ValueError, match="overrides must look like key=value"):
        load_config(None, ["mode"])
    with pytest.raises(ValueError, match="config must be a YAML file or one of"):
        load_config("no_such_config")
    with pytest.raises(ValueError, match="mode must be one of"):
        SegTrainConfig(mode="lora")
    with pytest.raises(ValueError, match="preset must be one of"):
        SegTrainConfig(preset="mine")
    with pytest.raises(ValueError, match="precision must be one of"):
        SegTrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        SegTrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        SegTrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="c_text must be a finite number > 0"):
        SegTrainConfig(c_text=-1.0)
    with pytest.raises(ValueError, match="eval_data entries"):
        SegTrainConfig(eval_data=["imagenet"])
    with pytest.raises(ValueError, match="name must be"):
        SegTrainConfig(name="../escape")
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        SegTrainConfig(max_steps=5, warmup_steps=6)
    with pytest.raises(ValueError, match="image_size must be a multiple of the patch size 8"):
        build_task(fast_config(image_size=36))


def test_key_ignores_bookkeeping_but_not_the_recipe():
    a = fast_config()
    assert a.key() == fast_config(name="other", progress=True, toy_eval_images=9).key()
    assert a.key() != fast_config(lr=1e-4).key()
    assert a.key() != fast_config(mode="attention").key()


# ----------------------------------------------------------------------------- optimiser
def test_cosine_schedule():
    f = cosine_lambda(100)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(100) == pytest.approx(0.0, abs=1e-12)
    assert all(f(t) >= f(t + 1) for t in range(100))
    g = cosine_lambda(100, warmup_steps=10)
    assert g(0) == pytest.approx(0.001) and g(10) == pytest.approx(f(10)) and g(5) < f(5)
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        cosine_lambda(0)


def test_parameter_groups_cover_every_trainable_tensor_once():
    task, _ = build_task(fast_config(mode="hyro"))
    groups = parameter_groups(task.segmenter, lr=1e-3, clip_lr_multiplier=0.025, weight_decay=1e-4)
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for _, p in task.segmenter.trainable_named_parameters()]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    by_name = {g["name"]: g for g in groups}
    assert by_name["clip"]["lr"] == pytest.approx(2.5e-5) and by_name["decoder"]["lr"] == 1e-3
    assert by_name["decoder_no_decay"]["weight_decay"] == 0.0  # GroupNorm / LayerNorm
    clip_ids = {id(p) for n, p in task.segmenter.trainable_named_parameters() if n.startswith("finetuning.")}
    assert {id(p) for p in by_name["clip"]["params"]} == clip_ids


# ----------------------------------------------------------------------------- data
def test_resumable_sampler_continues_the_same_stream():
    full = list(ResumableSampler(10, start=0, stop=35, seed=3))
    tail = list(ResumableSampler(10, start=17, stop=35, seed=3))
    assert full[17:] == tail and len(full) == 35
    for e in range(3):  # every epoch is a permutation
        assert sorted(i for i, _ in full[10 * e: 10 * e + 10]) == list(range(10))
    assert [i for i, _ in full[:10]] != [i for i, _ in full[10:20]]
    assert list(ResumableSampler(2**62, start=5, stop=8, shuffle=False)) == [(5, 5), (6, 6), (7, 7)]


def test_toy_training_data_labels():
    world = ToyWorld()
    data = ToySegmentationData(world, image_size=64)
    assert data.vocabulary == tuple(world.class_names[k] for k in world.seen_classes)
    a, b = data[(0, 5)], data[(0, 5)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    for p in range(6):  # labels index the vocabulary: the scene's classes, background ignored
        scene = world.scene(p, split="train", classes="seen", num_objects=(1, 3))
        label = data[(0, p)]["label"]
        names = {data.vocabulary[i] for i in label.unique().tolist() if i != 255}
        assert names == {world.class_names[k] for k in scene.classes}
        assert (label == 255).any()
    assert not torch.equal(data[(0, 6)]["image"], a["image"])


# ----------------------------------------------------------------------------- training
def test_train_checkpoints_hold_only_trainable_tensors_and_result_is_reloaded(tmp_path):
    config = fast_config(name="plain")
    result = train(config, root=tmp_path)
    assert not result["loaded"] and result["steps"] == 4 and len(result["losses"]) == 4
    assert all(math.isfinite(v) for v in result["losses"])
    toy = result["metrics"]["toy"]
    assert 0 <= toy["seen_miou"] <= 1 and 0 <= toy["unseen_miou"] <= 1 and toy["num_images"] == 4
    ckpt = torch.load(tmp_path / "plain" / "checkpoints" / "last.ckpt", weights_only=False)
    keys = set(ckpt["state_dict"])
    assert keys and all(k.startswith(("segmenter.finetuning.", "segmenter.decoder.")) for k in keys)
    assert set(result["state"]) == {k[len("segmenter."):] for k in keys}
    assert (tmp_path / "plain" / "logs" / "csv" / "version_0" / "metrics.csv").is_file()
    again = train(config, root=tmp_path)  # load if present, else train
    assert again["loaded"] and all(torch.equal(again["state"][k], v) for k, v in result["state"].items())
    seg = load_trained(result, device="cpu")
    assert all(torch.equal(v, result["state"][k]) for k, v in seg.trainable_state_dict().items())
    with pytest.raises(ValueError, match="different config"):
        train(fast_config(name="plain", lr=1e-2), root=tmp_path)


@pytest.mark.parametrize("mode", ["hyro", "attention"])
def test_resume_after_interruption_reproduces_the_run(tmp_path, mode):
    straight = train(fast_config(name="straight", mode=mode), root=tmp_path, evaluate=False)
    with pytest.raises(SimulatedInterruption):
        train(fast_config(name="crashed", mode=mode), root=tmp_path, evaluate=False, interrupt_after=2)
    assert not (tmp_path / "crashed" / "result.pt").exists()
    resumed = train(fast_config(name="crashed", mode=mode), root=tmp_path, evaluate=False)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert resumed["losses"] == pytest.approx(straight["losses"][2:], rel=1e-5)
    for k, v in straight["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=1e-5, atol=1e-6)
    # the resumed run really changed the weights after the crash (not a trivially equal state)
    moved = [k for k, v in straight["state"].items() if k.startswith("decoder.")]
    assert moved


def test_training_moves_the_adapters_and_lowers_the_loss(tmp_path):
    config = fast_config(name="learn", max_steps=12, lr=3e-3, clip_lr_multiplier=1.0)
    task, _ = build_task(config)
    before = {k: v.clone() for k, v in task.segmenter.trainable_state_dict().items()}
    result = train(config, root=tmp_path, evaluate=False)
    changed = [k for k in before if k.startswith("finetuning.") and not torch.equal(before[k], result["state"][k])]
    assert changed  # the CLIP-side parameters trained
    losses = result["losses"]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_command_line(tmp_path, capsys):
    assert main(["--print-config", "--set", "mode=rotation"]) == 0
    out = capsys.readouterr().out
    assert "mode: rotation" in out and "c_text: 1.0" in out
    args = ["--root", str(tmp_path)] + [x for k, v in {**FAST, "max_steps": 2}.items()
                                         for x in ("--set", f"{k}={'null' if v is None else v}")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "unseen mIoU" in out
    assert main(args + ["--eval-only"]) == 0
    assert "unseen mIoU" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--set", "mode=lora"])


def test_mixed_precision_trains_with_the_hyperbolic_maths_in_fp32(tmp_path):
    from hyro_edu.hyperbolic_adapter import HyperbolicAdapter

    seen = []
    original = HyperbolicAdapter.adapt_weight

    def spy(self, weight):
        out = original(self, weight)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    HyperbolicAdapter.adapt_weight = spy
    try:
        result = train(fast_config(name="bf16", mode="hyro", max_steps=2, precision="bf16-mixed"), root=tmp_path,
                       evaluate=False)
    finally:
        HyperbolicAdapter.adapt_weight = original
    assert result["steps"] == 2 and all(math.isfinite(v) for v in result["losses"])
    assert any(autocast for autocast, _ in seen)  # the adapters ran under autocast ...
    assert all(dtype == torch.float32 for _, dtype in seen)  # ... and still returned fp32 weights
    assert all(v.dtype == torch.float32 for v in result["state"].values())
