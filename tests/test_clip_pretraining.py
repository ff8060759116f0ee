"""Contrastive pretraining of the tiny CLIP: the loss, a short real run, caching and atomic writes."""
from __future__ import annotations

import math
import signal

import pytest
import torch
import torch.nn.functional as F

from hyro_edu import clip_pretraining as P
from hyro_edu.clip.tiny import TINY_CLIP_NAME
from hyro_edu.clip.weights import load_clip
from hyro_edu.data.toyworld import ToyWorld
from hyro_edu.training.runs import TrainingInterrupted

SHORT = P.PretrainConfig(steps=100, batch_size=32, warmup=10)
TINY_RUN = P.PretrainConfig(steps=2, batch_size=4, warmup=1)


def test_loss_is_log_n_when_nothing_is_learned_and_matches_clip_with_identity_targets():
    g = torch.Generator().manual_seed(0)
    n = 8
    zeros = torch.zeros(n, 16)
    assert float(P.contrastive_loss(zeros, zeros, torch.tensor(2.0))) == pytest.approx(math.log(n))
    img, txt = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    scale = torch.tensor(math.log(20.0))
    logits = 20.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    labels = torch.arange(n)
    reference = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(P.contrastive_loss(img, txt, scale), reference)
    torch.testing.assert_close(P.contrastive_loss(txt, img, scale), reference)  # symmetric


def test_loss_minimum_and_multiple_positives_for_repeated_captions():
    e = torch.eye(6)
    assert float(P.contrastive_loss(e, e, torch.tensor(math.log(100.0)))) < 1e-10
    # pairs 0 and 1 show the same class and have the same caption
    img = torch.eye(6)
    img[1] = img[0]
    txt = img.clone().requires_grad_(True)
    labels = torch.eye(6)
    labels[1] = labels[0]
    same = P.same_labels(labels)
    assert same[0, 1] and same[1, 0] and int(same.sum()) == 8
    scale = torch.tensor(math.log(100.0))
    # with both captions counted as correct this is an optimum: cross-entropy is bounded below
    # by the entropy of its targets (log 2 on rows 0 and 1, 0 elsewhere), and it is attained
    loss = P.contrastive_loss(img, txt, scale, same)
    assert float(loss.detach()) == pytest.approx(2 * math.log(2) / 6, abs=1e-6)
    (grad,) = torch.autograd.grad(loss, txt)
    assert float(grad.abs().max()) < 1e-6
    # a pair that matches worse than the repeated ones raises the loss above the bound
    worse = txt.detach().clone()
    worse[3] = torch.eye(6)[4]
    assert float(P.contrastive_loss(img, worse, scale, same)) > 2 * math.log(2) / 6 + 0.1
    with pytest.raises(ValueError, match="True diagonal"):
        P.contrastive_loss(img, txt, scale, torch.zeros(6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="both have shape"):
        P.contrastive_loss(img, txt[:5], scale)


def test_config_validation_and_cache_key():
    assert P.PretrainConfig().key() == P.PretrainConfig().key()
    keys = {
        P.PretrainConfig().key(),
        P.PretrainConfig(steps=901).key(),
        P.PretrainConfig(lr=1e-3).key(),
        P.PretrainConfig(world={"seed": 1}).key(),
        P.PretrainConfig(model={**P.PretrainConfig().model, "embed_dim": 32}).key(),
    }
    assert len(keys) == 5  # every setting changes the key, so a changed config retrains
    for kwargs, match in [
        ({"steps": 0}, "steps must be >= 1"),
        ({"batch_size": 1}, "batch_size must be >= 2"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"warmup": 10_000}, r"warmup must be in \[0, steps"),
        ({"hflip": 1.5}, "hflip must be a probability"),
    ]:
        with pytest.raises(ValueError, match=match):
            P.PretrainConfig(**kwargs)


def test_a_short_run_raises_zero_shot_accuracy():
    world = SHORT.make_world()
    initial = P.ContrastivePretraining(SHORT).backbone  # same seed, so the run's starting point
    trained, record = P.train_tiny_clip(SHORT, device="cpu", eval_images=0)
    assert len(record["losses"]) == SHORT.steps
    first, last = sum(record["losses"][:10]) / 10, sum(record["losses"][-10:]) / 10
    assert last < first - 0.5
    before = P.zero_shot_accuracy(initial, world, classes="seen", n_images=240)
    after = P.zero_shot_accuracy(trained, world, classes="seen", n_images=240)
    assert before.accuracy < 2 * before.chance  # an untrained CLIP is at chance
    assert after.accuracy > 3 * after.chance and after.accuracy > before.accuracy + 0.08
    # 100 steps teach the colour words; telling shapes apart takes the full run (see the chapter)
    assert after.colour_accuracy > 0.9 > 0.5 > before.colour_accuracy
    # unseen names: a new composition of seen words, scored among the unseen names
    unseen = P.zero_shot_accuracy(trained, world, classes="unseen", n_images=240)
    assert unseen.accuracy > 3 * unseen.chance
    assert unseen.chance == pytest.approx(1 / 18) and unseen.colour_only == pytest.approx(1 / 3)


def test_zero_shot_baselines_and_arguments():
    world = ToyWorld()
    bb = P.ContrastivePretraining(TINY_RUN).backbone
    r = P.zero_shot_accuracy(bb, world, classes="unseen", candidates="all", n_images=12)
    assert r.n == 12 and len(r.candidates) == 54 and r.chance == pytest.approx(1 / 54)
    assert r.colour_only == pytest.approx(1 / 9) and r.shape_only == pytest.approx(1 / 6)
    assert set(r.targets.tolist()) <= set(world.unseen_classes)
    with pytest.raises(ValueError, match="candidates must contain every class"):
        P.zero_shot_accuracy(bb, world, classes="all", candidates="seen", n_images=4)
    with pytest.raises(ValueError, match="n_images must be an integer >= 1"):
        P.zero_shot_accuracy(bb, world, n_images=0)


def test_train_or_load_caches_by_config_and_loads_the_same_weights(tmp_path, monkeypatch):
    calls = []
    real_train = P.train_tiny_clip

    def counting_train(config, **kwargs):
        calls.append(config.key())
        return real_train(config, eval_images=6, **kwargs)

    monkeypatch.setattr(P, "train_tiny_clip", counting_train)
    first = P.pretrained_tiny_clip(TINY_RUN, device="cpu", cache_dir=tmp_path)
    path = P.checkpoint_path(TINY_RUN, tmp_path)
    assert path.is_file() and path.name == f"{TINY_CLIP_NAME}-{TINY_RUN.key()}.pt"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    second = P.pretrained_tiny_clip(TINY_RUN, device="cpu", cache_dir=tmp_path)
    assert len(calls) == 1  # loaded, not trained again
    assert (second.name, second.pretrained) == (TINY_CLIP_NAME, "toyworld") and not second.training
    for (n1, p1), (n2, p2) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert second.pretraining_record["key"] == TINY_RUN.key()
    assert set(second.pretraining_record["zero_shot_after"]) == {
        "unseen_among_unseen", "unseen_among_all", "seen_among_seen"
    }
    # a changed config trains again, into its own file
    other = P.PretrainConfig(steps=2, batch_size=4, warmup=1, seed=1)
    P.pretrained_tiny_clip(other, device="cpu", cache_dir=tmp_path)
    assert len(calls) == 2 and P.checkpoint_path(other, tmp_path).is_file()
    # a damaged file is trained again and replaced
    path.write_bytes(b"not a checkpoint")
    P.pretrained_tiny_clip(TINY_RUN, device="cpu", cache_dir=tmp_path)
    assert len(calls) == 3
    assert torch.load(path, weights_only=True)["key"] == TINY_RUN.key()


def test_load_clip_toyworld_tag_is_the_cached_pretraining(monkeypatch):
    calls = []

    def fake(config=None, *, device=None, **kwargs):
        calls.append((config, device))
        return "the cached tiny CLIP"

    monkeypatch.setattr(P, "pretrained_tiny_clip", fake)
    assert load_clip(TINY_CLIP_NAME, "toyworld", device="cpu") == "the cached tiny CLIP"
    assert calls == [(None, "cpu")]


def test_an_interrupted_pretraining_says_so_and_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    config = P.PretrainConfig(steps=6, batch_size=4, warmup=2)
    real_train = P.train_tiny_clip
    monkeypatch.setattr(P, "train_tiny_clip", lambda c, **kw: real_train(c, eval_images=6, **kw))
    reference = P.pretrained_tiny_clip(config, device="cpu", cache_dir=tmp_path / "a", checkpoint_every=2)
    out = capsys.readouterr().out
    path_a = P.checkpoint_path(config, tmp_path / "a")
    assert out.startswith("Pretraining the tiny CLIP once (first use): 6 steps") and str(path_a) in out
    assert "step 6/6" in out and out.rstrip().endswith("later calls load it from the cache")
    assert reference.pretraining_record["resumed_at"] == []

    faults = {}  # global step -> what happens while that step runs
    real_step = P.ContrastivePretraining.training_step

    def training_step(self, batch, batch_idx):
        fault = faults.pop(self.trainer.global_step, None)
        if fault == "crash":
            raise RuntimeError("power cut")
        if fault == "sigint":  # Ctrl-C, or Jupyter's "interrupt kernel": the step finishes first
            signal.raise_signal(signal.SIGINT)
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(P.ContrastivePretraining, "training_step", training_step)
    cache = tmp_path / "b"
    path, work = P.checkpoint_path(config, cache), P.partial_dir(config, cache)
    faults[3] = "crash"  # no chance to save: the partial checkpoint of step 2 is all that is left
    with pytest.raises(RuntimeError, match="power cut"):
        P.pretrained_tiny_clip(config, device="cpu", cache_dir=cache, checkpoint_every=2)
    assert not path.exists() and torch.load(work / "last.ckpt", weights_only=True)["global_step"] == 2
    capsys.readouterr()
    faults[4] = "sigint"
    with pytest.raises(TrainingInterrupted) as info:
        P.pretrained_tiny_clip(config, device="cpu", cache_dir=cache, checkpoint_every=2)
    assert capsys.readouterr().out.startswith("Resuming the tiny CLIP's pretraining at step 2 of 6")
    err = info.value
    assert (err.step, err.checkpoint, err.exit_code) == (5, work / "last.ckpt", 130)
    assert "to resume" in str(err) and "pretraining" in str(err)
    assert torch.load(work / "last.ckpt", weights_only=True)["global_step"] == 5  # the step it stopped at
    resumed = P.pretrained_tiny_clip(config, device="cpu", cache_dir=cache, checkpoint_every=2)
    assert capsys.readouterr().out.startswith("Resuming the tiny CLIP's pretraining at step 5 of 6")
    assert not faults and not work.exists() and list(path.parent.iterdir()) == [path]
    a, b = reference.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    ra, rb = reference.pretraining_record, resumed.pretraining_record
    assert rb["losses"] == ra["losses"] and len(rb["losses"]) == 6
    assert rb["zero_shot_before"] == ra["zero_shot_before"] and rb["resumed_at"] == [2, 5]
    assert torch.load(path, weights_only=True)["record"]["resumed_at"] == [2, 5]
    # a warm cache prints nothing
    P.pretrained_tiny_clip(config, device="cpu", cache_dir=cache)
    assert capsys.readouterr().out == ""


def test_a_damaged_partial_checkpoint_is_discarded(tmp_path, monkeypatch, capsys):
    real_train = P.train_tiny_clip
    monkeypatch.setattr(P, "train_tiny_clip", lambda c, **kw: real_train(c, eval_images=6, **kw))
    work = P.partial_dir(TINY_RUN, tmp_path)
    work.mkdir(parents=True)
    (work / "last.ckpt").write_bytes(b"half a checkpoint")
    backbone = P.pretrained_tiny_clip(TINY_RUN, device="cpu", cache_dir=tmp_path, progress=False)
    assert capsys.readouterr().out == ""  # progress=False: silent
    assert backbone.pretraining_record["resumed_at"] == [] and len(backbone.pretraining_record["losses"]) == 2
    assert not work.exists() and P.checkpoint_path(TINY_RUN, tmp_path).is_file()
    with pytest.raises(ValueError, match="checkpoint_every"):
        real_train(TINY_RUN, device="cpu", eval_images=0, checkpoint_every=0)
