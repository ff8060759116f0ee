"""The benchmark loaders read the prepared layout, check the completion marker and say what to run."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from data_scripts import prepare as P
from data_scripts.fixtures import build_sources
from hyro_edu.data import benchmarks as sd
from hyro_edu.segmentation.evaluation import evaluate

NAMES = ["ade20k_150", "pascal_context_59", "pascal_context_459", "voc20", "voc20b"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    sources = tmp_path_factory.mktemp("sources")
    fs = build_sources(sources, NAMES)
    root = tmp_path_factory.mktemp("root")
    (root / "downloads").mkdir()
    for name, path in fs.files.items():
        shutil.copy(path, root / "downloads" / name)
    P.prepare(NAMES, root, download=False, verify_checksums=False, progress=False, log=lambda m: None)
    return root, fs


@pytest.mark.parametrize("name", NAMES)
def test_samples_are_the_prepared_images_and_labels(prepared, name):
    root, fs = prepared
    ds = sd.SegmentationBenchmark(name, root=root)
    assert len(ds) == len(fs.expected[name]) and ds.split == "val"
    for i in range(len(ds)):
        sample = ds[i]
        image, label = sample["image"], sample["label"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3 and image.shape[1:] == label.shape
        assert label.dtype == torch.int64
        assert np.array_equal(label.numpy(), fs.expected[name][sample["name"]].astype(np.int64))
        valid = (label >= 0) & (label < ds.num_classes) | (label == ds.ignore_index)
        assert bool(valid.all())
    assert ds[-1]["name"] == ds[len(ds) - 1]["name"]
    with pytest.raises(IndexError, match="index must be an integer in"):
        ds[len(ds)]


def test_class_names_vocabulary_and_prompts(prepared):
    root, fs = prepared
    ade = sd.SegmentationBenchmark("ade20k_150", root=root)
    assert ade.class_names == tuple(fs.class_names["ade20k_150"])  # the metadata
    assert ade.eval_class_names == tuple(fs.eval_class_names["ade20k_150"])  # ade150.json
    assert ade.eval_class_names != ade.class_names
    assert ade.prompt_names[0] == "fixture-ade-1" and ade.prompt_names[7] == "fixture-ade-8 "
    assert sd.class_names("pascal_context_459", root=root) == tuple(fs.class_names["pascal_context_459"])
    b = sd.SegmentationBenchmark("voc20b", root=root)
    assert b.num_classes == 21 and len(b.class_names) == 21 and b.class_names[-1] == "background"
    assert b.eval_class_names == tuple(fs.eval_class_names["voc20b"]) and len(b.eval_class_names) == 59
    assert b.collapse_background_at == 20
    assert sd.SegmentationBenchmark("voc20", root=root).collapse_background_at is None


def test_the_official_json_not_the_metadata_decides_the_pc59_vocabulary(prepared):
    from data_scripts.fixtures import PC59_RENAMED_ID
    from data_scripts.pascal_context import PC59_IDS

    root, fs = prepared
    ds = sd.SegmentationBenchmark("pascal_context_59", root=root)
    k = sorted(PC59_IDS)[1:].index(PC59_RENAMED_ID)  # the trainId of "table"
    assert ds.class_names[k] == "fixture-table" and ds.eval_class_names[k] == "fixture-diningtable"
    assert ds.prompt_names[k] == "fixture-diningtable"
    others = [i for i in range(59) if i != k]
    assert [ds.class_names[i] for i in others] == [ds.eval_class_names[i] for i in others]


def test_prompt_name_splits_like_catseg():
    # CAT-Seg's get_text_embeds: the part before the first ", " if there is one, else the name
    assert sd.prompt_name("person, individual, someone") == "person"
    assert sd.prompt_name("television receiver, television, tv") == "television receiver"
    assert sd.prompt_name("a,b") == "a,b"        # a comma without a space is not a separator
    assert sd.prompt_name("bed ") == "bed "      # ade150.json's spelling, passed on unchanged
    assert sd.prompt_name("pool table, billiard table") == "pool table"
    for bad in ("", "  ", None, 3):
        with pytest.raises(ValueError, match="name must be a non-empty string"):
            sd.prompt_name(bad)


def test_the_root_comes_from_hyro_edu_data(prepared, monkeypatch):
    root, _ = prepared
    monkeypatch.setenv("HYRO_EDU_DATA", str(root))
    ds = sd.SegmentationBenchmark("pascal_context_59")
    assert ds.root == root and sd.benchmark_dir("voc20") == root / "voc20"


def test_a_missing_marker_names_the_command(prepared, tmp_path):
    root, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root / "voc20", copy / "voc20")
    sd.clear_prepared("voc20", copy)
    with pytest.raises(sd.DatasetNotPreparedError) as err:
        sd.SegmentationBenchmark("voc20", root=copy)
    message = str(err.value)
    assert "PASCAL VOC-20 is not prepared" in message and "never prepared or interrupted" in message
    assert f"python -m data_scripts.prepare --datasets voc20 --root {copy}" in message
    with pytest.raises(sd.DatasetNotPreparedError, match="--datasets ade20k_847"):
        sd.SegmentationBenchmark("ade20k_847", root=tmp_path / "nothing")


def test_markers_from_another_layout_or_without_the_split_are_refused(prepared, tmp_path):
    root, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root / "voc20", copy / "voc20")
    marker = copy / "voc20" / sd.MARKER_NAME
    content = json.loads(marker.read_text())
    marker.write_text(json.dumps(content | {"layout_version": 0}))
    with pytest.raises(sd.DatasetNotPreparedError, match="layout version 0.*--force"):
        sd.SegmentationBenchmark("voc20", root=copy)
    # layout 1 had the metadata names as vocabulary: rerunning the plain command fixes it
    marker.write_text(json.dumps(content | {"layout_version": 1}))
    upgrade = "(?s)layout version 1.*labels are reused.*data_scripts.prepare --datasets voc20"
    with pytest.raises(sd.DatasetNotPreparedError, match=upgrade):
        sd.SegmentationBenchmark("voc20", root=copy)
    # a COCO-Stuff preparation of val only: asking for train says how to add it
    coco = copy / "coco_stuff"
    coco.mkdir()
    (coco / sd.MARKER_NAME).write_text(json.dumps({"layout_version": sd.LAYOUT_VERSION, "splits": {"val": 1}}))
    with pytest.raises(sd.DatasetNotPreparedError, match="(?s)split 'train' was not prepared.*--coco-stuff-splits train val"):
        sd.SegmentationBenchmark("coco_stuff", split="train", root=copy)


def test_bad_arguments_raise_value_errors(prepared):
    root, _ = prepared
    with pytest.raises(ValueError, match=r"name must be one of \['ade20k_150'"):
        sd.SegmentationBenchmark("ade20k", root=root)
    with pytest.raises(ValueError, match=r"split must be one of \['val'\] for voc20, got 'train'"):
        sd.SegmentationBenchmark("voc20", split="train", root=root)
    with pytest.raises(ValueError, match="transform must be callable"):
        sd.SegmentationBenchmark("voc20", root=root, transform=3)


def test_a_transform_sees_the_sample(prepared):
    root, _ = prepared
    ds = sd.SegmentationBenchmark("voc20", root=root, transform=lambda s: {**s, "image": s["image"].float() / 255})
    assert ds[0]["image"].dtype == torch.float32 and float(ds[0]["image"].max()) <= 1


def test_write_prepared_checks_before_it_marks(prepared, tmp_path):
    root, _ = prepared
    label = tmp_path / "l.png"
    label.write_bytes(b"x")
    ok = dict(manifest={"val": [("l.png", "l.png")]}, class_names=[f"c{i}" for i in range(20)])
    with pytest.raises(ValueError, match="class_names must have 20 entries for voc20, got 3"):
        sd.write_prepared("voc20", tmp_path, **(ok | {"class_names": ["a", "b", "c"]}))
    with pytest.raises(ValueError, match="names missing.png, which does not exist"):
        sd.write_prepared("voc20", tmp_path, **(ok | {"manifest": {"val": [("l.png", "missing.png")]}}))
    with pytest.raises(ValueError, match="manifest must map splits among"):
        sd.write_prepared("voc20", tmp_path, **(ok | {"manifest": {"train": [("l.png", "l.png")]}}))
    assert not (tmp_path / "voc20" / sd.MARKER_NAME).exists()
    marker = sd.write_prepared("voc20", tmp_path, **ok)
    assert json.loads(marker.read_text())["splits"] == {"val": 1}


def test_evaluate_on_a_prepared_benchmark_uses_its_vocabulary(prepared):
    root, fs = prepared
    ds = sd.SegmentationBenchmark("voc20b", root=root)
    calls = []

    def oracle_background(images, classes):  # votes for vocabulary entry 30, a "background" name
        calls.append(len(classes))
        logits = torch.zeros(images.shape[0], len(classes), 8, 8)
        logits[:, 30] = 1
        return logits

    result = evaluate(oracle_background, ds, limit=1, sliding_window=False)  # sliding: test_segmentation_eval
    labels = fs.expected["voc20b"][ds[0]["name"]].ravel()
    labels = labels[labels != 255]
    present = np.unique(labels)
    # every pixel is predicted 20 after the collapse: only class 20 has a non-zero IoU
    iou_20 = (labels == 20).sum() / labels.size
    assert set(calls) == {59}
    assert result["miou"] == pytest.approx(iou_20 / len(present))


def test_whitespace_kept_in_a_prompt_name_gives_the_same_clip_tokens():
    open_clip = pytest.importorskip("open_clip")

    tokenize = open_clip.get_tokenizer("ViT-B-16")
    template = "A photo of a {} in the scene"  # CAT-Seg's single template
    kept, stripped = sd.prompt_name("bed "), sd.prompt_name("bed ").strip()
    assert kept != stripped
    assert torch.equal(tokenize([template.format(kept)]), tokenize([template.format(stripped)]))
