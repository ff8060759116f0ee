"""Training: configs and presets, the optimiser, the resumable data stream, checkpoints and resume."""
from __future__ import annotations

import colorsys
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyro_edu import catseg as CS
from hyro_edu.clip.finetune import MODES, FinetuneConfig
from hyro_edu.nn.hyperbolic_adapter import parameter_counts
from hyro_edu.segmentation.train import (
    OFFICIAL_CLIP_MULTIPLIERS,
    PAPER_CLIP_MULTIPLIERS,
    PUBLISHED_STEP_REFERENCE,
    ColorAugSSD,
    CocoStuffTrainData,
    ResumableSampler,
    SegmentationTask,
    SegTrainConfig,
    SimulatedInterruption,
    ToySegmentationData,
    available_configs,
    build_model,
    build_task,
    cosine_lambda,
    estimate_run,
    format_estimate,
    hsv_to_rgb_opencv,
    load_config,
    load_result,
    load_trained,
    main,
    parameter_groups,
    resize_for_training,
    rgb_to_hsv_opencv,
    shortest_edge_size,
    train,
)
from hyro_edu.data.toyworld import ToyWorld

# A random-weight tiny CLIP (no first-use pretraining), 32-px crops, batch 2: a few seconds per run.
FAST = dict(pretrained=None, image_size=32, batch_size=2, max_steps=4, checkpoint_every=1, toy_eval_images=4,
            progress=False, toy_objects=[1, 2])


def fast_config(**kw) -> SegTrainConfig:
    return load_config(None, {**FAST, **kw})


# ----------------------------------------------------------------------------- configs
def test_shipped_configs_load_and_resolve():
    assert available_configs() == ["ablation_vitb16", "gpu_smoke", "official_vitb16",
                                   "official_vitl336", "paper_vitb16", "toy"]
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
    # (the preset's blocks are those FinetuneConfig derives for ViT-B/16's widths)
    assert official.finetune_config() == FinetuneConfig(mode="hyro", scale_block=128, rotation_block=256,
                                                         hclip_block=128)
    for mode, mult in OFFICIAL_CLIP_MULTIPLIERS.items():
        assert load_config("official_vitb16", {"mode": mode}).resolved().clip_lr_multiplier == mult
    # HyperCLIP keeps its 128-blocks under the paper preset; only HyRo's S is 256
    assert load_config("paper_vitb16", {"mode": "hyperclip"}).resolved().scale_block == 128
    # explicit values win over the preset
    assert load_config("official_vitb16", {"c_text": 0.5}).resolved().c_text == 0.5
    # the loss: the paper's softmax CE, the code's BCE; augmentation and TF32 as the official code
    assert (paper.loss, official.loss) == ("ce", "bce")
    for r in (paper, official):
        assert (r.color_aug, r.train_resize, r.matmul_precision) == ("ssd", "pil", "high")
    # every mode has a multiplier in both presets (frozen's is read by no parameter)
    assert set(OFFICIAL_CLIP_MULTIPLIERS) == set(PAPER_CLIP_MULTIPLIERS) == set(MODES)
    for preset in ("paper", "official"):
        frozen = load_config("official_vitb16", {"mode": "frozen", "preset": preset}).resolved()
        assert frozen.clip_lr_multiplier > 0


def test_vit_l14_and_ablation_configs():
    """The ViT-L/14@336 config is HyRo's vitl_336.yaml: 384 crops resized to 336 for CLIP,
    multiplier 0.025; the ablation config's documented overrides give the paper's rows."""
    vitl = load_config("official_vitl336").resolved()
    assert (vitl.model, vitl.pretrained) == ("ViT-L-14-336", "openai")
    assert (vitl.image_size, vitl.clip_resolution) == (384, 336)
    assert (vitl.clip_lr_multiplier, vitl.prompt_ensemble, vitl.loss) == (0.025, "single", "bce")
    assert (vitl.batch_size, vitl.max_steps) == (4, 80_000)
    assert (vitl.scale_block, vitl.rotation_block) == (128, 256)
    rows = {}
    for mode in ("frozen", "hyperclip", "rotation", "hyro"):
        r = load_config("ablation_vitb16", [f"mode={mode}", f"name=ablation-{mode}"]).resolved()
        rows[mode] = r.finetune_config().mode
    assert rows == {m: m for m in rows}
    for c in (0.01, 0.1, 1.0):
        overrides = [f"c_text={c}", f"c_vision={c}", f"name=ablation-c{c}"]
        r = load_config("ablation_vitb16", overrides).resolved()
        assert (r.finetune_config().c_text, r.finetune_config().c_vision) == (c, c)
    keys = {load_config("ablation_vitb16", [f"rotation_block={n}"]).key() for n in (32, 128, 256)}
    assert len(keys) == 3  # three different runs
    smoke = load_config("gpu_smoke").resolved()
    assert (smoke.model, smoke.pretrained, smoke.train_data) == ("ViT-B-16", None, "coco_stuff")
    assert smoke.max_steps <= 100 and smoke.val_every and smoke.val_every < smoke.max_steps


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
    bookkeeping = dict(name="other", progress=True, toy_eval_images=9, val_every=2, val_limit=3)
    assert a.key() == fast_config(**bookkeeping).key()
    assert a.key() != fast_config(lr=1e-4).key()
    assert a.key() != fast_config(mode="attention").key()
    for field, value in (("loss", "ce"), ("color_aug", "legacy"), ("train_resize", "torch"),
                         ("matmul_precision", "highest"), ("prompt_ensemble", "imagenet"),
                         ("clip_resolution", 64)):
        assert a.key() != fast_config(**{field: value}).key(), field


def test_new_switches_reject_bad_values():
    for field, value in (("loss", "focal"), ("color_aug", "strong"), ("train_resize", "cv2"),
                         ("matmul_precision", "tf32"), ("prompt_ensemble", "vild"),
                         ("val_data", "imagenet")):
        with pytest.raises(ValueError, match=f"{field} must be (one of|'toy' or one of)"):
            SegTrainConfig(**{field: value})
    with pytest.raises(ValueError, match="val_every must be an integer >= 1"):
        SegTrainConfig(val_every=0)


def test_the_estimate_is_scaled_from_the_published_figure():
    """HyperCLIP's log: 0.587 s per step of 4 images on 4 GPUs.  80,000 steps of 4 (official) and
    40,000 of 8 (paper) are the same images: 13.04 h either way, 4 x that in GPU time."""
    assert PUBLISHED_STEP_REFERENCE["seconds_per_step"] == 0.587
    for name in ("official_vitb16", "paper_vitb16"):
        e = estimate_run(load_config(name))
        assert e["hours"] == pytest.approx(80_000 * 0.587 / 3600)
        assert e["gpu_hours"] == pytest.approx(4 * e["hours"])
        assert e["memory_mib_per_gpu"] == 14_951
    text = format_estimate(load_config("official_vitl336"))
    assert "PUBLISHED reference, not our measurement" in text and "13.0 h" in text
    assert "ViT-L-14-336" in text and "images of a micro-batch" in text
    short = estimate_run(load_config("official_vitb16", {"max_steps": 8_000}))
    assert short["hours"] == pytest.approx(e["hours"] / 10)


def test_decoder_initialisation_does_not_depend_on_loading_the_clip(monkeypatch):
    """The tiny CLIP is pretrained on first use (drawing random numbers) and read from the cache
    later: the decoder a config builds must be the same either way."""
    from hyro_edu.segmentation.train import task as ST  # where build_model looks load_clip up

    plain = build_model(fast_config())
    original = ST.load_clip

    def first_use(*args, **kwargs):
        torch.rand(1000)  # what a first-use pretraining does to the global generator
        return original(*args, **kwargs)

    monkeypatch.setattr(ST, "load_clip", first_use)
    again = build_model(fast_config())
    for (name, a), b in zip(plain.decoder.state_dict().items(), again.decoder.state_dict().values()):
        assert torch.equal(a, b), name


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
    at_crash = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert at_crash["global_step"] == 2
    resumed = train(fast_config(name="crashed", mode=mode), root=tmp_path, evaluate=False)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 4
    assert resumed["losses"] == pytest.approx(straight["losses"][2:], rel=1e-5)
    for k, v in straight["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=1e-5, atol=1e-6)
    # the resumed run really changed the weights after the crash (not a trivially equal state):
    # decoder tensors of the step-2 checkpoint differ from the final ones
    decoder = [k for k in straight["state"] if k.startswith("decoder.")]
    moved = [k for k in decoder
             if not torch.allclose(at_crash["state_dict"][f"segmenter.{k}"], resumed["state"][k], atol=1e-7)]
    assert decoder and len(moved) > len(decoder) // 2


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
    from hyro_edu.nn.hyperbolic_adapter import HyperbolicAdapter

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


# ------------------------------------------------------------------------ loss switch in training
def test_the_training_step_uses_the_configured_loss():
    """``loss: ce`` trains on the paper's softmax CE, ``loss: bce`` on CAT-Seg's BCE -- the same
    batch and model give each loss's own value."""
    values = {}
    for loss in ("ce", "bce"):
        task, data = build_task(fast_config(loss=loss))
        task.log = lambda *args, **kwargs: None  # no trainer attached
        batch = torch.utils.data.default_collate([data[(0, p)] for p in range(2)])
        with torch.no_grad():
            values[loss] = float(task.training_step(batch, 0))
            logits = task.segmenter(batch["image"], task.vocabulary).float()
            n = len(task.vocabulary)
            ce = float(CS.pixel_cross_entropy(logits, batch["label"], n))
            bce = float(CS.catseg_loss(logits, batch["label"], n))
        assert values[loss] == pytest.approx(ce if loss == "ce" else bce, rel=1e-6)
        assert abs(ce - bce) > 1e-3


# ----------------------------------------------------------------------------- matmul precision
def test_matmul_precision_is_set_while_training_and_restored(tmp_path):
    """The official preset trains under torch.set_float32_matmul_precision("high") (train_net.py);
    "highest" when asked; the caller's setting is back afterwards; importing sets nothing."""
    code = "import torch, hyro_edu.segmentation.train; print(torch.get_float32_matmul_precision())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "highest"  # PyTorch's default: the import changed nothing
    seen = []
    original = SegmentationTask.training_step

    def spy(self, batch, batch_idx):
        seen.append(torch.get_float32_matmul_precision())
        return original(self, batch, batch_idx)

    before = torch.get_float32_matmul_precision()
    SegmentationTask.training_step = spy
    try:
        train(fast_config(name="tf32", max_steps=1), root=tmp_path, evaluate=False)
        train(fast_config(name="fp32", max_steps=1, matmul_precision="highest"), root=tmp_path,
              evaluate=False)
    finally:
        SegmentationTask.training_step = original
    assert seen == ["high", "highest"]
    assert torch.get_float32_matmul_precision() == before


# ------------------------------------------------------------------------ in-training validation
def test_in_training_validation_runs_every_val_every_steps(tmp_path):
    config = fast_config(name="val", val_every=2, val_data="toy", val_limit=4)
    result = train(config, root=tmp_path, evaluate=False)
    assert [step for step, _ in result["validations"]] == [2, 4]
    assert all(0 <= miou <= 1 for _, miou in result["validations"])
    seg = load_trained(result, device="cpu")
    assert seg.decoder.eval_pooling == (1, 1)  # the final evaluation keeps the official 1x1
    import csv

    with open(tmp_path / "val" / "logs" / "csv" / "version_0" / "metrics.csv") as f:
        logged = {float(r["val/miou"]) for r in csv.DictReader(f) if r.get("val/miou")}
    want = sorted(miou for _, miou in result["validations"])
    assert sorted(logged) == pytest.approx(want, rel=1e-6)  # val/miou reached the logs


# ------------------------------------------------------------------------ COCO-Stuff augmentation
class _Images(torch.utils.data.Dataset):
    """A stand-in for the prepared COCO-Stuff train split: given uint8 images and labels."""

    ignore_index = 255
    prompt_names = ("thing", "stuff")

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image, label = self.pairs[i]
        return {"image": image, "label": label, "name": str(i)}


def _noise(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    label = torch.randint(0, 2, (h, w), generator=g)
    return image, label


def test_shortest_edge_size_is_detectron2_s():
    assert shortest_edge_size(480, 640, 384, 1333) == (384, 512)
    assert shortest_edge_size(100, 1000, 384, 1333) == (133, 1333)  # the longest side caps it
    assert shortest_edge_size(2, 3, 3, 1333) == (3, 5)  # 4.5 rounds half up (Python's round: 4)


def test_training_resize_pil_antialiases_and_torch_does_not():
    """A 3x reduction of uniform noise: PIL's bilinear filter (detectron2's ResizeTransform on
    uint8) averages neighbouring pixels, so the output's spread shrinks; F.interpolate without
    antialiasing samples single pixels and keeps it.  The PIL output is uint8, the other float."""
    image, label = _noise(96, 96)
    pil, _ = resize_for_training(image, label, 32, method="pil")
    flt, _ = resize_for_training(image, label, 32, method="torch")
    assert pil.dtype == torch.uint8 and flt.dtype == torch.float32
    assert pil.shape == flt.shape == (3, 32, 32)
    assert pil.float().std() < 0.6 * flt.std()
    assert flt.std() > 0.8 * image.float().std()


def test_training_resize_of_labels_uses_the_floor_rule():
    """CAT-Seg reads labels as float64, so detectron2 resizes them with F.interpolate(nearest):
    output column i takes input column floor(i * 3 / 7) -- not PIL's centre rule
    floor((i + .5) * 3 / 7)."""
    label = torch.arange(3).repeat(3, 1)  # label[r, c] = c
    image = torch.zeros(3, 3, 3, dtype=torch.uint8)
    for method in ("pil", "torch"):
        _, out = resize_for_training(image, label, 7, method=method)
        assert out[0].tolist() == [0, 0, 0, 1, 1, 2, 2]  # the centre rule: [0, 0, 1, 1, 2, 2, 2]


def test_opencv_hsv_units_and_hand_values():
    """OpenCV's 8-bit HSV: H = hue in degrees / 2 in [0, 180), S = 255 (max - min) / max,
    V = max."""
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 128, 0], [128, 128, 128],
                    [0, 0, 0], [255, 0, 255]], dtype=np.uint8)
    hsv = rgb_to_hsv_opencv(rgb)
    assert hsv.tolist() == [[0, 255, 255], [60, 255, 255], [120, 255, 255], [15, 255, 255],
                            [0, 0, 128], [0, 0, 0], [150, 255, 255]]
    assert hsv_to_rgb_opencv(hsv[:3]).tolist() == rgb[:3].tolist()
    # against colorsys (exact real arithmetic) on random colours: OpenCV rounds to integers
    x = np.random.default_rng(0).integers(0, 256, (3000, 3), dtype=np.uint8)
    ref = np.array([colorsys.rgb_to_hsv(*(c / 255.0)) for c in x.astype(float)])
    h = rgb_to_hsv_opencv(x).astype(float)
    assert np.abs((h[:, 0] - 180 * ref[:, 0] + 90) % 180 - 90).max() <= 1
    assert np.abs(h[:, 1] - 255 * ref[:, 1]).max() <= 1
    assert np.array_equal(h[:, 2], 255 * ref[:, 2])
    hsv = np.random.default_rng(1).integers(0, 256, (3000, 3), dtype=np.uint8)
    hsv[:, 0] %= 180
    back = 255 * np.array([colorsys.hsv_to_rgb(a / 180, b / 255, c / 255)
                           for a, b, c in hsv.astype(float)])
    diff = hsv_to_rgb_opencv(hsv) - back
    assert diff.max() <= 1e-3 and diff.min() >= -1 - 1e-9  # truncated (float32), never rounded up


def test_color_aug_ssd_draws_as_detectron2():
    """Each step with probability 1/2 (4 standard errors over 4,000 plans), contrast first half the
    time, brightness in [-32, 32], contrast and saturation factors in [0.5, 1.5], hue an integer in
    [-18, 18] with both ends reachable."""
    aug, rng = ColorAugSSD(), np.random.default_rng(0)
    plans = [aug.draw(rng) for _ in range(4000)]
    se = 4 * math.sqrt(0.25 / 4000)
    for key in ("brightness", "contrast", "saturation", "hue"):
        assert abs(np.mean([p[key] is not None for p in plans]) - 0.5) < se, key
    assert abs(np.mean([p["contrast_first"] for p in plans]) - 0.5) < se
    b = [p["brightness"] for p in plans if p["brightness"] is not None]
    c = [p[k] for p in plans for k in ("contrast", "saturation") if p[k] is not None]
    hue = {p["hue"] for p in plans if p["hue"] is not None}
    assert -32 <= min(b) < -30 and 30 < max(b) <= 32
    assert 0.5 <= min(c) < 0.52 and 1.48 < max(c) <= 1.5
    assert hue == set(range(-18, 19))


def test_color_aug_ssd_steps_and_order():
    aug = ColorAugSSD()
    none = dict(brightness=None, contrast_first=True, contrast=None, saturation=None, hue=None)
    px = np.array([[[200, 100, 50]]], dtype=np.uint8)
    assert np.array_equal(aug.apply(px, none), px)
    # brightness: add and truncate (detectron2's convert: float32, clip, astype(uint8))
    assert aug.apply(px, dict(none, brightness=20.7)).tolist() == [[[220, 120, 70]]]
    assert aug.apply(px, dict(none, brightness=80.0)).tolist() == [[[255, 180, 130]]]
    # contrast: multiply, no mean-centring
    assert aug.apply(px, dict(none, contrast=1.26)).tolist() == [[[252, 126, 63]]]
    # brightness always comes first: (200 + 40) * 0.5 = 120, not 200 * 0.5 + 40 = 140
    grey = np.full((1, 1, 3), 200, dtype=np.uint8)
    for first in (True, False):
        out = aug.apply(grey, dict(none, brightness=40.0, contrast=0.5, contrast_first=first))
        assert out.tolist() == [[[120, 120, 120]]]
    # hue: +60 OpenCV units (120 degrees) turns red into green; saturation 0.5 halves S
    red = np.array([[[255, 0, 0]]], dtype=np.uint8)
    assert aug.apply(red, dict(none, hue=60)).tolist() == [[[0, 255, 0]]]
    assert rgb_to_hsv_opencv(aug.apply(red, dict(none, saturation=0.5)))[0, 0, 1] in (127, 128)
    # contrast before or after saturation: the coin matters (clipping makes them differ)
    img = np.array([[[250, 120, 20], [30, 200, 90]]], dtype=np.uint8)
    a = aug.apply(img, dict(none, contrast=1.4, saturation=1.5, contrast_first=True))
    b = aug.apply(img, dict(none, contrast=1.4, saturation=1.5, contrast_first=False))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, aug.saturation_(aug.contrast_(img, 1.4), 1.5))
    assert np.array_equal(b, aug.contrast_(aug.saturation_(img, 1.5), 1.4))


def _old_getitem(data, image, label, size, seed, position):
    """The augmentation before issue 12, verbatim in behaviour (float bilinear resize, pad, crop,
    always-on jitter, flip): what ``color_aug="legacy", resize="torch"`` must reproduce."""
    state = np.random.SeedSequence([seed, 11, position]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(state))
    image = image.float()
    h, w = label.shape
    scale = min(size / min(h, w), 1333 / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    ph, pw = max(0, size - nh), max(0, size - nw)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=128.0)
        label = F.pad(label, (0, pw, 0, ph), value=255)
    top = int(torch.randint(0, image.shape[1] - size + 1, (1,), generator=g))
    left = int(torch.randint(0, image.shape[2] - size + 1, (1,), generator=g))
    image = image[:, top: top + size, left: left + size]
    label = label[top: top + size, left: left + size]
    u = torch.rand(4, generator=g)
    image = image + (u[0] * 64 - 32)
    mean = image.mean()
    image = (image - mean) * (0.5 + u[1]) + mean
    grey = image.mean(0, keepdim=True)
    image = (image - grey) * (0.5 + u[2]) + grey
    if u[3] < 0.5:
        image, label = image.flip(-1), label.flip(-1)
    return (image.clamp(0, 255) / 255.0 - data.mean) / data.std, label


def test_coco_stuff_augmentation_switches():
    """``legacy`` + ``torch`` is the earlier pipeline exactly; the official pipeline (``ssd`` +
    ``pil``) pads *after* the colour step and the flip, so the padding stays exactly 128 / 255 at
    the bottom, while the legacy jitter changes the padded pixels too."""
    wide = _noise(10, 40, seed=3)  # 384 x 1536 would exceed 1333: 333 x 1333, padded to 384 rows
    pairs = [_noise(30, 24, seed=1), wide]
    official = CocoStuffTrainData(32 * 12, dataset=_Images(pairs), seed=5)
    legacy = CocoStuffTrainData(32 * 12, dataset=_Images(pairs), seed=5, color_aug="legacy",
                                resize="torch")
    for index in range(2):
        for position in range(3):
            want_image, want_label = _old_getitem(legacy, *pairs[index], 384, 5, position)
            got = legacy[(index, position)]
            torch.testing.assert_close(got["image"], want_image, rtol=0, atol=0)
            assert torch.equal(got["label"], want_label)
    pad_value = (128 / 255.0 - official.mean) / official.std
    jittered = []
    for position in range(8):
        o = official[(1, position)]
        assert o["image"].shape == (3, 384, 384)
        assert torch.equal(o["label"][333:], torch.full((51, 384), 255))
        torch.testing.assert_close(o["image"][:, 333:], pad_value.expand(3, 51, 384), rtol=0,
                                   atol=1e-6)
        old = legacy[(1, position)]["image"][:, 333:]
        jittered.append(not torch.allclose(old, pad_value.expand(3, 51, 384), atol=1e-3))
    assert any(jittered)
    assert not torch.equal(official[(0, 0)]["image"], legacy[(0, 0)]["image"])
    with pytest.raises(ValueError, match="color_aug must be one of"):
        CocoStuffTrainData(64, dataset=_Images(pairs), color_aug="strong")


def test_color_aug_none_keeps_the_colours_and_ssd_changes_them():
    """On a one-colour image ``color_aug="none"`` returns that colour everywhere (crop and flip
    only); ``"ssd"`` changes it for some positions (each step has probability 1/2)."""
    image = torch.tensor([200, 100, 50], dtype=torch.uint8).view(3, 1, 1).expand(3, 40, 48).clone()
    pairs = [(image, torch.zeros(40, 48, dtype=torch.long))]
    none = CocoStuffTrainData(32, dataset=_Images(pairs), color_aug="none")
    ssd = CocoStuffTrainData(32, dataset=_Images(pairs), color_aug="ssd")
    want = (torch.tensor([200.0, 100.0, 50.0]).view(3, 1, 1) / 255 - none.mean) / none.std
    changed = 0
    for position in range(8):
        torch.testing.assert_close(none[(0, position)]["image"], want.expand(3, 32, 32), rtol=0,
                                   atol=1e-6)
        changed += not torch.allclose(ssd[(0, position)]["image"], want.expand(3, 32, 32), atol=1e-3)
    assert changed >= 4  # P(unchanged) = 1/16 per position


# ------------------------------------------------------------------------ the full path, CPU-sized
def test_gpu_smoke_config_runs_the_whole_path_on_a_cpu(tmp_path, capsys):
    """The gpu_smoke config at CPU size: fixture datasets in the real on-disk formats, prepared as
    the appendix says; training on COCO-Stuff with in-training validation; the final evaluation on
    the benchmarks; the estimate printed before the run.  ADE-847 is left out here: its
    847 x 640 x 640 score maps cost about a minute of memory traffic on a 2-core CPU, and PC-459
    takes the same path (more classes than the decoder's pad_len)."""
    from data_scripts import prepare as P
    from data_scripts.fixtures import build_sources

    sources = tmp_path / "sources"
    build_sources(sources)
    data = tmp_path / "data"
    P.prepare(["all"], data, mirror=sources.as_uri(), verify_checksums=False, progress=False,
              log=lambda message: None)
    tiny = dict(model="hyro-tiny", image_size=64, clip_resolution=64, scale_block=32,
                rotation_block=64, hclip_block=32, max_steps=4, val_every=2, batch_size=2,
                eval_limit=1, num_workers=0, progress=False,
                eval_data="[pascal_context_459,ade20k_150,pascal_context_59,voc20,voc20b]")
    args = ["--config", "gpu_smoke", "--data-root", str(data), "--root", str(tmp_path / "runs")]
    args += [x for k, v in tiny.items() for x in ("--set", f"{k}={v}")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "PUBLISHED reference, not our measurement" in out
    assert "validation at step 2" in out and "validation at step 4" in out
    for key in ("pascal_context_459", "ade20k_150", "pascal_context_59", "voc20", "voc20b"):
        assert f"{key}: mIoU" in out
    overrides = [f"{k}={v}" for k, v in tiny.items()]
    result = load_result(load_config("gpu_smoke", overrides), root=tmp_path / "runs")
    assert result["steps"] == 4 and len(result["metrics"]) == 5 and len(result["validations"]) == 2
    assert load_config("gpu_smoke").eval_data[0] == "ade20k_847"  # on a GPU: all six
