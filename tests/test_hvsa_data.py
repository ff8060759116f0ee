"""HVSA's datasets: preparation (the command line's code path) on miniature raw files in the real
formats, the prepared layouts, the readers, and the errors (missing or corrupt archives,
unprepared folders, labels outside the hierarchy)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_scripts import prepare as P
from data_scripts.cityscapes import CITYSCAPES_LABELS, LABEL_ID_TO_TRAIN_ID, train_id_lut
from data_scripts.download import DataPreparationError
from data_scripts.hvsa_fixtures import IMCLEF_NODES, TIERED_TREE, arff_text, build_hvsa_sources
from data_scripts.imclef07 import parse_arff
from hyro_edu.data import hierarchical_datasets as hd
from hyro_edu.hierarchy.trees import Tree

HVSA = ["imclef07a", "imclef07d", "cityscapes", "lip", "pascal_person_part", "tiered_imagenet_h"]
QUIET = dict(progress=False, log=lambda message: None)


def _install(fs, root: Path, names=None) -> None:
    """Put the fixture files where downloads land, as if they had been downloaded (or placed by hand)."""
    (root / "downloads").mkdir(parents=True, exist_ok=True)
    for name, path in fs.files.items():
        if names is None or name in names:
            shutil.copy(path, root / "downloads" / name)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hvsa_sources")
    return folder, build_hvsa_sources(folder)


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    _, fs = sources
    root = tmp_path_factory.mktemp("hvsa_root")
    _install(fs, root)
    P.prepare(["hvsa"], root, download=False, verify_checksums=False, imagenet_root=fs.imagenet_root, **QUIET)
    return root, fs


# ----------------------------------------------------------------------------
# names and the command line
# ----------------------------------------------------------------------------
def test_hvsa_names_the_six_datasets_and_all_keeps_meaning_the_seven_benchmarks():
    assert P.resolve_names(["hvsa"]) == HVSA
    assert len(P.resolve_names(["all"])) == 7 and not set(P.resolve_names(["all"])) & set(HVSA)
    assert P.resolve_names(["lip", "hvsa"])[0] == "lip"
    with pytest.raises(ValueError, match="datasets must be among.*'hvsa'"):
        P.resolve_names(["imclef07b"])


def test_dry_run_lists_downloads_and_manual_steps_without_writing(tmp_path):
    lines = []
    root = tmp_path / "empty"
    missing = P.dry_run(["hvsa"], root, log=lines.append)
    text = "\n".join(lines)
    # 4 ARFF files, 2 Cityscapes zips, 2 LIP zips, the PPP zip, the splits zip, the isa file, ImageNet
    assert missing == 12
    assert "raw.githubusercontent.com/EGiunchiglia/C-HMCNN/" in text and "ImCLEF07A_Train.arff" in text
    assert "cityscapes-dataset.com" in text and "leftImg8bit_trainvaltest.zip" in text
    assert "--imagenet-root" in text and text.count("MANUAL STEP") == 6
    assert not root.exists()
    assert P.main(["--datasets", "cityscapes", "--root", str(root), "--dry-run", "--quiet"]) == 1


def test_the_command_line_downloads_through_a_mirror_and_reports_prepared_datasets(sources, tmp_path):
    folder, fs = sources
    args = ["--datasets", "imclef07d", "--root", str(tmp_path), "--mirror", folder.as_uri(),
            "--skip-checksums", "--quiet"]
    assert P.main(args) == 0
    assert hd.check_prepared("imclef07d", root=tmp_path)["splits"] == {"trainval": 20, "train": 14, "val": 6,
                                                                       "test": 5}
    lines = []
    assert P.dry_run(["imclef07d"], tmp_path, log=lines.append) == 0
    assert "prepared (train: 14, val: 6, test: 5, trainval: 20)" in lines[1]


# ----------------------------------------------------------------------------
# ImCLEF07
# ----------------------------------------------------------------------------
def test_the_arff_parser_reads_the_header_and_rows(sources):
    _, fs = sources
    data = parse_arff(fs.files["ImCLEF07A_Train.arff"])
    assert data.relation == "ehd" and data.attributes == [f"arg{k}" for k in range(1, 81)]
    assert data.hierarchy[:4] == ["2", "2/1", "2/1/3", "4"] and len(data.hierarchy) == 12  # repeats kept
    assert data.features.shape == (20, 80) and data.features.dtype == np.float32
    assert data.labels[0] == ["2", "2/1", "2/1/3"] and data.labels[3] == ["4/a/0"]


@pytest.mark.parametrize("name", ["imclef07a", "imclef07d"])
def test_imclef07_nodes_in_chmcnn_order_with_path_closed_labels(prepared, name):
    root, fs = prepared
    expected = fs.expected[name]
    hierarchy = json.loads((root / name / "hierarchy.json").read_text())
    assert hierarchy["names"] == [n for n, _ in IMCLEF_NODES] == expected["names"]
    assert hierarchy["parents"] == [p for _, p in IMCLEF_NODES]
    trainval, test = hd.ImCLEF07(name, "trainval", root), hd.ImCLEF07(name, "test", root)
    for ds, (x, y) in ((trainval, expected["train"]), (test, expected["test"])):
        assert torch.equal(ds.features, torch.from_numpy(x))
        assert torch.equal(ds.labels, torch.from_numpy(y).float())  # the leaf-only row is closed too
    tree = trainval.tree
    assert isinstance(tree, Tree) and tree.names[0] == hd.VIRTUAL_ROOT and tree.parents[0] == -1
    assert tree.names[1:] == trainval.node_names and trainval.depths == (1, 1, 2, 2, 2, 3, 3, 3, 3)
    # path-closed: every positive node's parent is positive
    for j, p in enumerate(trainval.parents):
        if p >= 0:
            assert bool((trainval.labels[:, j] <= trainval.labels[:, p]).all())
    x, y = trainval[0]
    assert x.shape == (80,) and y.shape == (9,) and x.dtype == y.dtype == torch.float32


def test_imclef07_split_is_deterministic_disjoint_and_of_the_papers_sizes(prepared):
    train, val = hd.imclef07_split(10_000, 3_000)
    assert len(train) == 7_000 and len(val) == 3_000
    assert len(np.union1d(train, val)) == 10_000 and not np.intersect1d(train, val).size
    again = hd.imclef07_split(10_000, 3_000)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    root, _ = prepared
    split = json.loads((root / "imclef07a" / "split.json").read_text())
    rows = hd.imclef07_split(20, 6)
    assert split["train_rows"] == rows[0].tolist() and split["val_rows"] == rows[1].tolist()
    full = hd.ImCLEF07("imclef07a", "trainval", root)
    val_ds = hd.ImCLEF07("imclef07a", "val", root)
    assert torch.equal(val_ds.features, full.features[split["val_rows"]])
    assert len(hd.ImCLEF07("imclef07a", "train", root)) == 14


def _write_arff(root: Path, axis: str, train_labels, header=None) -> None:
    rows = np.zeros((len(train_labels), 80), dtype=int)
    (root / "downloads").mkdir(parents=True, exist_ok=True)
    kwargs = {} if header is None else {"header": header}
    (root / "downloads" / f"ImCLEF07{axis}_Train.arff").write_text(arff_text(rows, train_labels, **kwargs))
    (root / "downloads" / f"ImCLEF07{axis}_Test.arff").write_text(arff_text(rows[:1], train_labels[:1], **kwargs))


def test_a_label_outside_the_hierarchy_stops_the_preparation(tmp_path):
    _write_arff(tmp_path, "A", ["2@2/1@2/1/3", "2@2/1@2/1/7"])
    with pytest.raises(DataPreparationError, match=r"row 2: label '2/1/7' is outside the hierarchy"):
        P.prepare(["imclef07a"], tmp_path, download=False, **QUIET)
    assert not (tmp_path / "imclef07a" / hd.MARKER_NAME).exists()
    _write_arff(tmp_path, "A", ["2@2/1@2/1/3"], header="2,2/1/3")  # the header skips "2/1"
    with pytest.raises(DataPreparationError, match="the header skips a level.*'2/1'"):
        P.prepare(["imclef07a"], tmp_path, download=False, **QUIET)


def test_a_malformed_arff_row_is_reported_with_its_line(tmp_path):
    _write_arff(tmp_path, "D", ["2@2/1@2/1/3"])
    path = tmp_path / "downloads" / "ImCLEF07D_Train.arff"
    path.write_text(path.read_text().replace("0,0,2@", "?,0,2@", 1))
    with pytest.raises(DataPreparationError, match=r"ImCLEF07D_Train.arff, line 86: .*numbers \(no '\?'\)"):
        P.prepare(["imclef07d"], tmp_path, download=False, **QUIET)


def test_a_missing_arff_names_its_url(tmp_path):
    with pytest.raises(DataPreparationError, match="ImCLEF07A_Train.arff is missing.*raw.githubusercontent.com"):
        P.prepare(["imclef07a"], tmp_path, download=False, **QUIET)


# ----------------------------------------------------------------------------
# Cityscapes
# ----------------------------------------------------------------------------
def test_the_cityscapes_table_has_the_19_train_ids_in_order():
    evaluated = [(name, t) for _, name, t in CITYSCAPES_LABELS if t != 255]
    assert [t for _, t in evaluated] == list(range(19))
    assert [name for name, _ in evaluated] == list(hd.CITYSCAPES_CLASSES)
    assert [i for i, _, _ in CITYSCAPES_LABELS] == list(range(34))
    lut = train_id_lut()
    assert lut.dtype == np.uint8 and lut.shape == (256,) and (lut[34:] == 255).all()
    assert all(lut[k] == v for k, v in LABEL_ID_TO_TRAIN_ID.items())


def test_cityscapes_labels_are_train_ids_and_the_test_split_is_skipped(prepared):
    root, fs = prepared
    manifest = json.loads((root / "cityscapes" / "manifest.json").read_text())
    assert sorted(manifest) == ["train", "val"]
    seen = {}
    for split, pairs in manifest.items():
        for image, label in pairs:
            assert image.startswith(f"raw/cityscapes/leftImg8bit/{split}/") and image.endswith("_leftImg8bit.png")
            assert label == f"cityscapes/labels/{split}/{Path(label).name}"
            with Image.open(root / label) as im:
                assert im.mode == "L"
                seen[Path(label).stem] = (split, np.asarray(im))
    assert sorted(seen) == sorted(fs.expected["cityscapes"]) and "berlin_000000_000019" not in seen
    for stem, (split, array) in seen.items():
        want_split, want = fs.expected["cityscapes"][stem]
        assert split == want_split and np.array_equal(array, want), stem
    ds = hd.HierarchicalSegmentation("cityscapes", "train", root)
    sample = ds[0]
    assert sample["image"].shape == (3, 6, 8) and sample["image"].dtype == torch.uint8
    assert sample["label"].shape == (6, 8) and sample["label"].dtype == torch.int64
    assert ds.num_classes == 19 and ds.ignore_index == 255 and len(ds) == 2
    assert set(sample["label"].unique().tolist()) <= set(range(19)) | {255}


def test_cityscapes_without_its_archives_says_how_to_get_them(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, names={"gtFine_trainvaltest.zip"})
    with pytest.raises(DataPreparationError) as err:
        P.prepare(["cityscapes"], tmp_path, download=False, **QUIET)
    message = str(err.value)
    assert "leftImg8bit_trainvaltest.zip is missing" in message and "cityscapes-dataset.com/register" in message
    assert not (tmp_path / "cityscapes" / hd.MARKER_NAME).exists()


def test_a_truncated_cityscapes_zip_is_reported(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, names={"gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"})
    archive = tmp_path / "downloads" / "gtFine_trainvaltest.zip"
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataPreparationError, match="gtFine_trainvaltest.zip is truncated or corrupt"):
        P.prepare(["cityscapes"], tmp_path, download=False, **QUIET)
    assert not (tmp_path / "cityscapes" / hd.MARKER_NAME).exists()


def test_an_interrupted_preparation_leaves_no_marker_and_a_rerun_finishes(sources, tmp_path, monkeypatch):
    import data_scripts.cityscapes as cs

    _, fs = sources
    _install(fs, tmp_path, names={"gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cs, "segmentation_files", crash)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(["cityscapes"], tmp_path, download=False, **QUIET)
    assert any((tmp_path / "cityscapes" / "labels" / "train").iterdir())  # labels were written ...
    assert not (tmp_path / "cityscapes" / hd.MARKER_NAME).exists()       # ... but the run did not finish
    with pytest.raises(hd.DatasetNotPreparedError) as err:
        hd.HierarchicalSegmentation("cityscapes", "val", tmp_path)
    assert f"python -m data_scripts.prepare --datasets cityscapes --root {tmp_path}" in str(err.value)
    monkeypatch.undo()
    logs = []
    P.prepare(["cityscapes"], tmp_path, download=False, progress=False, log=logs.append)
    assert len(hd.HierarchicalSegmentation("cityscapes", "val", tmp_path)) == 1
    P.prepare(["cityscapes"], tmp_path, download=False, progress=False, log=logs.append)
    assert "already prepared" in logs[-1]
    assert P.prepare(["cityscapes"], tmp_path, download=False, force=True, **QUIET)  # --force redoes it
    assert hd.check_prepared("cityscapes", root=tmp_path)["splits"] == {"train": 2, "val": 1}


# ----------------------------------------------------------------------------
# LIP and PASCAL-Person-Part
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, splits", [("lip", ("train", "val")), ("pascal_person_part", ("train", "test"))])
def test_parsing_labels_are_checked_and_copied(prepared, name, splits):
    root, fs = prepared
    assert tuple(hd.check_prepared(name, root=root)["splits"]) == splits
    for split in splits:
        ds = hd.HierarchicalSegmentation(name, split, root)
        for sample in ds:
            want_split, want = fs.expected[name][sample["name"]]
            assert want_split == split and np.array_equal(sample["label"].numpy(), want)
            assert sample["image"].shape == (3, 5, 7)
    classes = json.loads((root / name / "classes.json").read_text())
    assert classes["class_names"] == list(hd.dataset_info(name).class_names)


def test_lip_flips_swap_left_and_right():
    perm = hd.flip_permutation("lip")
    assert perm[14] == 15 and perm[15] == 14 and perm[18] == 19 and perm[255] == 255 and perm[5] == 5
    label = torch.tensor([[0, 14, 16, 255]])
    assert perm[label.flip(-1)].tolist() == [[255, 17, 15, 0]]
    assert torch.equal(hd.flip_permutation("cityscapes"), torch.arange(256))


def test_a_label_value_outside_the_classes_stops_the_preparation(sources, tmp_path):
    import io
    import zipfile

    _, fs = sources
    _install(fs, tmp_path, names={"TrainVal_images.zip", "TrainVal_parsing_annotations.zip"})
    archive = tmp_path / "downloads" / "TrainVal_parsing_annotations.zip"
    with zipfile.ZipFile(archive) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    bad = next(n for n in members if n.startswith("TrainVal_parsing_annotations/val_segmentations/"))
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 7), 20, dtype=np.uint8)).save(buf, format="PNG")
    members[bad] = buf.getvalue()
    with zipfile.ZipFile(archive, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(DataPreparationError, match=r"label values \[20\] are outside the 20 class ids"):
        P.prepare(["lip"], tmp_path, download=False, **QUIET)
    assert not (tmp_path / "lip" / hd.MARKER_NAME).exists()


# ----------------------------------------------------------------------------
# tieredImageNet-H
# ----------------------------------------------------------------------------
def test_tiered_tree_classes_and_images(prepared):
    root, fs = prepared
    ds = hd.TieredImageNetH("train", root)
    assert ds.tree == Tree(*TIERED_TREE)
    assert ds.classes == ("n01440764", "n01443537", "n07565083") and ds.leaf_nodes == (3, 4, 5)
    manifest = json.loads((root / "tiered_imagenet_h" / "manifest.json").read_text())
    for split, expected in fs.expected["tiered_imagenet_h"].items():
        assert [tuple(p) for p in manifest[split]] == expected
    sample = ds[0]
    assert sample["image"].shape == (3, 224, 224) and sample["label"] == 0
    assert hd.TieredImageNetH("val", root, image_size=None)[2]["image"].shape == (3, 7, 5)
    assert hd.TieredImageNetH("test", root)[2]["label"] == 2


def test_isa_tree_does_not_depend_on_line_order_and_refuses_non_trees():
    edges = [("r", "b"), ("r", "a"), ("a", "x")]
    assert hd.isa_tree(edges) == hd.isa_tree(edges[::-1]) == Tree(("r", "a", "b", "x"), (-1, 0, 0, 1))
    with pytest.raises(ValueError, match="two parents|the parents"):
        hd.isa_tree([("r", "a"), ("r", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="one root"):
        hd.isa_tree([("r", "a"), ("s", "b")])


def test_tiered_needs_the_imagenet_folder(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, names={"splits_tiered.zip", "tiered_imagenet_isa.txt"})
    with pytest.raises(DataPreparationError, match="MANUAL STEP.*image-net.org.*--imagenet-root"):
        P.prepare(["tiered_imagenet_h"], tmp_path, download=False, **QUIET)
    empty = tmp_path / "imagenet"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(DataPreparationError, match="12 tieredImageNet-H images are missing"):
        P.prepare(["tiered_imagenet_h"], tmp_path, download=False, imagenet_root=empty, **QUIET)
    isa = tmp_path / "downloads" / "tiered_imagenet_isa.txt"
    isa.write_text(isa.read_text().replace("n00002684 n01440764", "n00002684 n01440999"))
    with pytest.raises(DataPreparationError, match=r"\['n01440764'\] are outside the hierarchy"):
        P.prepare(["tiered_imagenet_h"], tmp_path, download=False, imagenet_root=fs.imagenet_root, **QUIET)


# ----------------------------------------------------------------------------
# readers of unprepared folders
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", HVSA)
def test_readers_of_an_unprepared_folder_name_the_command(tmp_path, name):
    kind = hd.dataset_info(name).kind
    with pytest.raises(hd.DatasetNotPreparedError) as err:
        if kind == "multilabel":
            hd.ImCLEF07(name, "train", tmp_path)
        elif kind == "segmentation":
            hd.HierarchicalSegmentation(name, root=tmp_path)
        else:
            hd.TieredImageNetH("train", tmp_path)
    assert f"python -m data_scripts.prepare --datasets {name} --root {tmp_path}" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_a_marker_of_another_version_or_split_is_refused(prepared, tmp_path):
    root, _ = prepared
    shutil.copytree(root / "lip", tmp_path / "lip")
    marker = tmp_path / "lip" / hd.MARKER_NAME
    content = json.loads(marker.read_text())
    marker.write_text(json.dumps({**content, "layout_version": 0}))
    with pytest.raises(hd.DatasetNotPreparedError, match="layout version 0"):
        hd.HierarchicalSegmentation("lip", "train", tmp_path)
    marker.write_text(json.dumps({**content, "splits": {"train": 2}}))
    with pytest.raises(hd.DatasetNotPreparedError, match="split 'val' was not prepared"):
        hd.HierarchicalSegmentation("lip", "val", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        hd.HierarchicalSegmentation("lip", "test", tmp_path)
    with pytest.raises(ValueError, match="name must be 'imclef07a' or 'imclef07d'"):
        hd.ImCLEF07("lip", "train", tmp_path)
