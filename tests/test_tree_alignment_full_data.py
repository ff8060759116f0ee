"""Tree alignment's trainer on the full-size datasets, tried on the miniature CIFAR-100 and SUN
fixtures in their real formats (``data_scripts.taxonomic_fixtures``, prepared by
``data_scripts.prepare``): the data check, the base-to-novel data (few-shot base training set on
the base tree; base, novel and full test sets with their stored cuts), the lazy batches, and a
3-step run of the tiny CLIP."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from data_scripts import prepare as P
from data_scripts.taxonomic_fixtures import CIFAR_BASE_NOVEL, build_taxonomic_sources
from hyro_edu.data import taxonomic_datasets as td
from hyro_edu.tree_alignment.train import DataNotPrepared, build_data, check_data, load_config, train
from hyro_edu.tree_alignment.train import config as C

KEYS = ("cifar100_protect", "sun324")
# the tiny CLIP on a paper config: 4 blocks, 64 px; no warm-up epoch (the config counts 50 base classes)
TINY = dict(clip_model="hyro-tiny", clip_pretrained=None, layers=[1, 2, 3], prompt_depth=2, shots=2,
            batch_size=4, steps=3, warmup_epochs=0, eval_limit=6, eval_batch_size=4, progress=False,
            checkpoint_every=100, train_classes="base", augment=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    sources = tmp_path_factory.mktemp("ta_full_sources")
    fs = build_taxonomic_sources(sources)
    root = tmp_path_factory.mktemp("ta_full_root")
    (root / "downloads").mkdir()
    for name, path in fs.files.items():
        if name.startswith(tuple(f"{k}_" for k in KEYS)) or name in ("cifar-100-python.tar.gz", "SUN397.tar.gz"):
            shutil.copy(path, root / "downloads" / name)
    P.prepare(list(KEYS), root, download=False, progress=False, log=lambda message: None, verify_checksums=False)
    return root


def test_the_config_names_the_prepared_datasets_their_base_classes_and_the_clip_input_size():
    assert set(C.TAXONOMIC_KEYS) == set(C.FULL_DATASETS) and set(C.TAXONOMIC_KEYS.values()) == set(td.DATASETS)
    for name, key in C.TAXONOMIC_KEYS.items():
        info = td.dataset_info(key)
        assert (C.FULL_DATASETS[name], C.BASE_CLASSES[name]) == (info.num_labels, info.base_novel[0]), name
        assert load_config(name).num_train_classes == info.num_labels  # the few-shot setting: every class
        assert load_config(name, {"train_classes": "base"}).num_train_classes == info.base_novel[0]
    assert load_config("cifar100").image_size == 224 and load_config("toy").image_size == 64
    assert load_config("sun", TINY).image_size == 64
    from hyro_edu.clip.weights import load_clip

    assert load_clip("hyro-tiny", None, device="cpu").native_image_size == C.CLIP_IMAGE_SIZES["hyro-tiny"]
    # image_root: a user's folder, left out of the run key; not for the toy world
    cfg = load_config("imagenet")
    assert load_config("imagenet", {"image_root": "/data/ILSVRC2012"}).key() == cfg.key()
    with pytest.raises(ValueError, match="image_root is for the full-size datasets"):
        load_config("toy", {"image_root": "/x"})
    with pytest.raises(ValueError, match="train_classes 'base' is a full-size dataset's split"):
        load_config("toy", {"train_classes": "base"})
    with pytest.raises(ValueError, match="train_classes 'seen' is the toy world's split"):
        load_config("sun", {"train_classes": "seen"})
    with pytest.raises(ValueError, match="augment must be true or false"):
        load_config("sun", {"augment": "yes"})


def test_check_data_passes_when_prepared_and_names_the_command_when_not(prepared, tmp_path):
    for name in ("cifar100", "sun"):
        check_data(load_config(name), prepared)
    for name, key in C.TAXONOMIC_KEYS.items():
        with pytest.raises(DataNotPrepared, match=rf"dataset '{name}' is not prepared: run python -m "
                                                  rf"data_scripts.prepare --datasets {key} ") as caught:
            check_data(load_config(name), tmp_path / "empty")
        assert isinstance(caught.value, ValueError)
    with pytest.raises(DataNotPrepared, match="imagenet_protect"):  # prepared: cifar100 and sun only
        check_data(load_config("imagenet"), prepared)


@pytest.mark.parametrize("name", ["cifar100", "sun"])
def test_build_data_follows_the_base_to_novel_protocol(prepared, name):
    key = C.TAXONOMIC_KEYS[name]
    config = load_config(name, TINY)
    data = build_data(config, data_root=prepared)
    base, novel, full = (td.read_tree(key, s, prepared) for s in ("base", "novel", "all"))
    assert data.tree.names == base.names and data.tree.parents == base.parents
    assert len(data.train) == config.shots * base.num_labels
    assert sorted(data.train.labels.tolist()) == sorted(list(range(base.num_labels)) * config.shots)
    # the picks are the data layer's few-shot draw of the base training split
    train_split = td.TaxonomicDataset(key, "train", prepared, subset="base")
    assert list(data.train.indices) == td.few_shot_indices(train_split.labels, config.shots, seed=config.seed)
    assert set(data.evals) == {"base", "novel", "full"}
    for ev_name, tree, subset in (("base", base, "base"), ("novel", novel, "novel"), ("full", full, "all")):
        ev = data.evals[ev_name]
        assert ev.tree.names == tree.names and ev.tree.parents == tree.parents, ev_name
        test_split = td.TaxonomicDataset(key, "test", prepared, subset=subset)
        assert ev.data.labels.tolist() == list(test_split.labels)
        assert set(ev.data.labels.tolist()) == set(range(tree.num_labels))
        assert ev.cuts == td.read_cuts(key, subset, prepared)
    assert (base.num_labels, novel.num_labels, full.num_labels) == (2, 2, 4)
    if name == "cifar100":
        assert base.label_names == ("plain", "cloud") and len(CIFAR_BASE_NOVEL["base"]) == 2
        assert novel.label_names == ("mountain", "forest")
    # lazy batches: CLIP-normalised float images at the CLIP size, the crops a function of (seed, epoch, index)
    batch = data.train.__getitems__([(0, 0), (3, 3)])
    assert batch["input"].shape == (2, 3, 64, 64) and batch["input"].dtype == torch.float32
    assert batch["target"].tolist() == data.train.labels[[0, 3]].tolist()
    assert torch.equal(batch["input"], data.train.__getitems__([(0, 0), (3, 3)])["input"])
    n = len(data.train)
    assert not torch.equal(batch["input"][0], data.train.__getitems__([(0, n)])["input"][0])  # next epoch
    test = data.evals["full"].data.__getitems__([0, 1, 2])
    assert test["input"].shape == (3, 3, 64, 64) and test["target"].tolist() == [0, 0, 1]
    assert torch.equal(test["input"], data.evals["full"].data.__getitems__([0, 1, 2])["input"])


def test_a_three_step_cifar_run_of_the_tiny_clip_reports_base_novel_and_full(prepared, tmp_path):
    result = train(load_config("cifar100", TINY), root=tmp_path, data_root=prepared)
    m = result["metrics"]
    assert set(m) == {"base", "novel", "full"}
    assert [m[k]["num_samples"] for k in ("base", "novel", "full")] == [4, 4, 6]  # eval_limit 6
    assert all(m[k]["num_cuts"] == 2 for k in m)  # the fixture's stored cuts, not drawn ones
    assert all(0.0 <= m[k][s] <= 100.0 for k in m for s in ("la", "hca", "mta"))
    assert result["steps"] == 3 and len(result["losses"]) == 3 and all(math.isfinite(x) for x in result["losses"])
    assert {"cuts_base.json", "cuts_novel.json", "cuts_full.json", "result.pt"} <= {
        p.name for p in result["run_dir"].iterdir()}


@pytest.mark.parametrize("name", ["cifar100", "sun"])
def test_the_few_shot_setting_trains_every_class_on_the_full_tree(prepared, name):
    """``train_classes: all`` (the shipped configs): every class's shots, the full tree, one
    evaluation set, and the official resize-and-centre-crop for training as for testing."""
    key = C.TAXONOMIC_KEYS[name]
    config = load_config(name, {**TINY, "train_classes": "all", "augment": False})
    data = build_data(config, data_root=prepared)
    full = td.read_tree(key, "all", prepared)
    assert data.tree.names == full.names and data.tree.parents == full.parents
    train_split = td.TaxonomicDataset(key, "train", prepared)
    assert list(data.train.indices) == td.few_shot_indices(train_split.labels, config.shots, seed=config.seed)
    assert sorted(data.train.labels.tolist()) == sorted(list(range(full.num_labels)) * config.shots)
    assert set(data.evals) == {"full"} and data.evals["full"].cuts == td.read_cuts(key, "all", prepared)
    n = len(data.train)
    first = data.train.__getitems__([(0, 0)])["input"]
    assert torch.equal(first, data.train.__getitems__([(0, n)])["input"])  # no augmentation: same every epoch
    test_view = td.TaxonomicDataset(key, "train", prepared)
    assert torch.equal(first[0], type(data.train)(test_view, [data.train.indices[0]], image_size=64)
                       .__getitems__([0])["input"][0])
