"""Tree alignment's datasets: preparation (the command line's code path) on miniature files in the
real formats (pickled treelibs trees, ProTeCt's lists, CIFAR's python batches, SUN397's tar, an
ImageNet folder, a Hugging Face copy of Rare Species), the prepared layout and its readers, the
errors, and the pure functions (few-shot sampling, the base/novel split, the restricted unpickler)."""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data_scripts import prepare as P
from data_scripts.download import DataPreparationError
from data_scripts.taxonomic_common import (ALLOWED_GLOBALS, ForbiddenPickleError, RestrictedUnpickler,
                                           load_npy_object, taxonomy_from_treelibs)
from data_scripts.taxonomic_fixtures import (CIFAR_BASE_NOVEL, CIFAR_TREE, FixtureTree, build_taxonomic_sources,
                                             save_treelibs_tree, treelibs_tree)
from hyro_edu.data import taxonomic_datasets as td
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree

KEYS = ["cifar100_protect", "sun324", "imagenet_protect", "rare_species"]
QUIET = dict(progress=False, log=lambda message: None, verify_checksums=False)  # the fixtures are not the real archives


def _install(fs, root: Path, names=None) -> None:
    """Put the fixture files where downloads land, as if they had been downloaded."""
    (root / "downloads").mkdir(parents=True, exist_ok=True)
    for name, path in fs.files.items():
        if names is None or name in names:
            shutil.copy(path, root / "downloads" / name)


def _names_of(fs, key: str) -> set:
    return {n for n in fs.files if n.startswith(f"{key}_")} | (
        {"cifar-100-python.tar.gz"} if key == "cifar100_protect" else {"SUN397.tar.gz"} if key == "sun324" else set())


def _options(fs) -> dict:
    return dict(imagenet_root=fs.imagenet_root, rare_species_root=fs.rare_species_root)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ta_sources")
    return folder, build_taxonomic_sources(folder)


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    _, fs = sources
    root = tmp_path_factory.mktemp("ta_root")
    _install(fs, root)
    P.prepare(["tree_alignment"], root, download=False, **_options(fs), **QUIET)
    return root, fs


def _design_tree() -> TaxonomicTree:
    """The design notes' 7-node example: root -> {A, c}; A -> {a1, B}; B -> {b1, b2}."""
    return TaxonomicTree.from_nested("root", {"A": {"a1": None, "B": ["b1", "b2"]}, "c": None})


# ----------------------------------------------------------------------------
# names and the command line
# ----------------------------------------------------------------------------
def test_tree_alignment_names_the_four_datasets_and_the_other_groups_keep_their_meaning():
    assert P.resolve_names(["tree_alignment"]) == KEYS
    assert not set(P.resolve_names(["all"])) & set(KEYS) and not set(P.resolve_names(["hvsa"])) & set(KEYS)
    with pytest.raises(ValueError, match="'tree_alignment'"):
        P.resolve_names(["cifar100"])
    args = P.build_parser().parse_args(["--datasets", "rare_species", "--rare-species-root", "/x"])
    assert args.rare_species_root == "/x"


def test_dry_run_lists_the_annotation_files_archives_and_manual_steps_without_writing(tmp_path):
    lines = []
    root = tmp_path / "empty"
    missing = P.dry_run(["tree_alignment"], root, log=lines.append)
    text = "\n".join(lines)
    # 9 annotation files per dataset, the CIFAR and SUN archives, ImageNet and Rare Species by hand
    assert missing == 4 * 9 + 2 + 2
    assert "raw.githubusercontent.com/gina9726/ProTeCt/" in text and "cifar100_protect_tree.npy" in text
    assert "HypModalAlign" in text and "rare_species_relabeler_base.npy" in text
    assert "cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in text and "SUN397.tar.gz" in text
    assert "--imagenet-root" in text and "--rare-species-root" in text and text.count("MANUAL STEP") == 2
    assert not root.exists()


# ----------------------------------------------------------------------------
# ProTeCt's files and the restricted unpickler
# ----------------------------------------------------------------------------
def test_a_pickled_treelibs_tree_reads_as_the_design_example(tmp_path):
    path = tmp_path / "tree.npy"
    save_treelibs_tree(treelibs_tree(CIFAR_TREE), path)
    tree = taxonomy_from_treelibs(load_npy_object(path))
    assert tree.names == ("root", "physical_entity", "mountain", "object", "plain", "cloud", "forest")
    assert tree.parents == (-1, 0, 1, 1, 3, 3, 0)
    assert tree.label_names == ("mountain", "plain", "cloud", "forest") and tree.depths[6] == 1
    design = _design_tree()
    assert tree.parents == design.parents and tree.leaves == design.leaves
    assert "treelibs" not in __import__("sys").modules  # the fixture's stand-in module is gone again


class _Exploit:
    def __reduce__(self):
        return os.system, ("echo pwned > /dev/null",)


def test_the_restricted_unpickler_refuses_a_forbidden_class(tmp_path):
    path = tmp_path / "evil.npy"
    array = np.empty((), dtype=object)
    array[()] = _Exploit()
    np.save(path, array, allow_pickle=True)
    with pytest.raises(ForbiddenPickleError, match=r"names (posix|os|nt)\.system, which is not allowed"):
        load_npy_object(path)
    # a treelibs module with another class name is refused too
    with pytest.raises(ForbiddenPickleError, match="treelibs.Evil"):
        RestrictedUnpickler(__import__("io").BytesIO(b"\x80\x03ctreelibs\nEvil\nq\x00.")).load()
    assert ("treelibs", "Tree") in ALLOWED_GLOBALS and ("builtins", "eval") not in ALLOWED_GLOBALS
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(DataPreparationError, match="plain float64 array"):
        load_npy_object(tmp_path / "plain.npy")


def test_a_tree_that_is_not_depth_first_is_refused(tmp_path):
    tree = treelibs_tree(CIFAR_TREE)
    tree.nodes["forest"].node_id, tree.nodes["mountain"].node_id = 2, 6  # breadth-first-like swap
    path = tmp_path / "tree.npy"
    save_treelibs_tree(tree, path)
    with pytest.raises(DataPreparationError, match="depth-first|leaf_nodes"):
        taxonomy_from_treelibs(load_npy_object(path))
    with pytest.raises(DataPreparationError, match="treelibs.Tree"):
        taxonomy_from_treelibs({"nodes": {}})
    assert isinstance(treelibs_tree({"a": None}), FixtureTree)


# ----------------------------------------------------------------------------
# the prepared layout and the readers
# ----------------------------------------------------------------------------
def test_cifar_images_are_written_from_the_python_batches(prepared):
    root, fs = prepared
    expected = fs.expected["cifar100_protect"]
    for split in ("train", "test"):
        ds = td.TaxonomicDataset("cifar100_protect", split, root)
        assert list(zip(ds.paths, ds.labels)) == expected["lists"][split]
        for k in range(len(ds)):
            image, label = ds[k]
            assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
            # the duplicated training file name resolves to the entry whose label names the leaf
            assert np.array_equal(image.permute(1, 2, 0).numpy(), expected["images"][ds.paths[k]])
    assert ds.tree.label_names == ("mountain", "plain", "cloud", "forest")
    marker = td.check_prepared("cifar100_protect", root=root)
    assert marker["image_root"] == "cifar100_protect/images" and marker["image_root_relative"]
    assert marker["sources"]["images"]["label_name_mismatches"] == 0


def test_sun_imagenet_and_rare_species_read_the_images_where_they_are(prepared):
    root, fs = prepared
    sun = td.TaxonomicDataset("sun324", "test", root)
    assert sun.image_root == root / "raw" / "sun324" / "SUN397"
    assert list(zip(sun.paths, sun.labels)) == fs.expected["sun324"]["lists"]["test"]
    assert sun[0][0].shape == (3, 6, 9)
    assert sun.tree.depths.count(3) == 4 and len(sun.tree) == 9  # all leaves at depth 3
    for split in ("train", "test"):
        inet = td.TaxonomicDataset("imagenet_protect", split, root)
        assert list(zip(inet.paths, inet.labels)) == fs.expected["imagenet_protect"][split]  # flat val found
        assert inet.image_root == fs.imagenet_root
        rare = td.TaxonomicDataset("rare_species", split, root)
        assert list(zip(rare.paths, rare.labels)) == fs.expected["rare_species"][split]
    assert rare[0][0].shape == (3, 8, 6)
    assert rare.tree.names[1] == "chordata" and max(rare.tree.depths) == 6
    assert "chordata_aves_passeriformes_turdidae_myadestes_obscurus" in rare.tree.label_names
    other = td.TaxonomicDataset("rare_species", "test", root, image_root=fs.rare_species_root,
                                transform=lambda im: im.float() / 255)
    assert other[0][0].dtype == torch.float32


def test_the_tree_json_round_trips_and_the_cifar_trees_are_named_apart(prepared):
    root, _ = prepared
    obj = json.loads((root / "cifar100_protect" / "tree.json").read_text())
    assert obj["labels"] == [2, 4, 5, 6] and obj["nodes_per_depth"] == [1, 2, 2, 2] and obj["depth"] == 3
    tree = td.tree_from_json(obj)
    assert td.tree_to_json(tree) == obj
    assert td.cifar100_tree("cifar100_wordnet", root).names == tree.names
    superclass = td.cifar100_tree("cifar100_superclass")
    assert len(superclass) == 121 and superclass.num_labels == 100
    with pytest.raises(ValueError, match="kind must be one of"):
        td.cifar100_tree("cifar100")
    with pytest.raises(ValueError, match="depth-first"):
        td.tree_from_json({"names": ["r", "a", "b", "x"], "parents": [-1, 0, 0, 1], "labels": [2, 3]})


def test_base_novel_files_subtrees_and_the_readers_subsets(prepared):
    root, _ = prepared
    split = json.loads((root / "cifar100_protect" / "base_novel.json").read_text())
    assert split["base"] == [1, 2] and split["novel"] == [0, 3]  # worked by hand (taxonomic_fixtures)
    assert {int(k): v for k, v in split["relabel_base"].items()} == CIFAR_BASE_NOVEL["base"]
    base = td.read_tree("cifar100_protect", "base", root)
    assert base.names == ("root", "physical_entity", "object", "plain", "cloud")
    novel = td.read_tree("cifar100_protect", "novel", root)
    assert novel.names == ("root", "physical_entity", "mountain", "forest")
    ds = td.TaxonomicDataset("cifar100_protect", "train", root, subset="novel")
    assert len(ds) == 6 and sorted(set(ds.labels)) == [0, 1]
    assert {ds.tree.label_names[l] for l in ds.labels} == {"mountain", "forest"}
    cuts = td.read_cuts("cifar100_protect", "all", root)
    assert [c.names for c in cuts] == [("mountain", "plain", "cloud", "forest"), ("physical_entity", "forest")]
    assert cuts[1].mapping == (0, 0, 0, 1)
    assert [c.names for c in td.read_cuts("cifar100_protect", "base", root)] == [("plain", "cloud"),
                                                                                ("physical_entity",)]
    for key in KEYS[1:]:
        want_base, want_novel = (list(x) for x in prepared[1].expected[f"{key}_split"])
        record = json.loads((root / key / "base_novel.json").read_text())
        assert record["base"] == want_base and record["novel"] == want_novel
        assert len(td.read_cuts(key, "novel", root)) == 2


def test_a_stored_relabeler_that_differs_is_used_and_reported(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "cifar100_protect"))
    for subset, mapping in (("base", {0: 0, 3: 1}), ("novel", {1: 0, 2: 1})):
        array = np.empty((), dtype=object)
        array[()] = mapping
        np.save(tmp_path / "downloads" / f"cifar100_protect_relabeler_{subset}.npy", array, allow_pickle=True)
    # the base/novel cut files must then fit the swapped subtrees: swap them too
    downloads = tmp_path / "downloads"
    base, novel = (downloads / f"cifar100_protect_treecuts_25_multi_{s}.pkl" for s in ("base", "novel"))
    base_bytes, novel_bytes = base.read_bytes(), novel.read_bytes()
    base.write_bytes(novel_bytes)
    novel.write_bytes(base_bytes)
    logs = []
    P.prepare(["cifar100_protect"], tmp_path, download=False, progress=False, log=logs.append, verify_checksums=False)
    assert any("differs from HypModalAlign's relabelers; using the stored ones" in line for line in logs)
    record = json.loads((tmp_path / "cifar100_protect" / "base_novel.json").read_text())
    assert record["base"] == [0, 3] and record["computed_agrees_with_stored"] == {"base": False, "novel": False}


# ----------------------------------------------------------------------------
# errors and the completion marker
# ----------------------------------------------------------------------------
def test_an_interrupted_preparation_leaves_no_marker_and_a_rerun_finishes(sources, tmp_path, monkeypatch):
    import data_scripts.taxonomic as tx

    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "cifar100_protect"))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tx, "write_cuts", crash)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(["cifar100_protect"], tmp_path, download=False, **QUIET)
    assert (tmp_path / "cifar100_protect" / "gt_train.txt").is_file()        # files were written ...
    assert not (tmp_path / "cifar100_protect" / td.MARKER_NAME).exists()     # ... but the run did not finish
    with pytest.raises(td.DatasetNotPreparedError) as err:
        td.TaxonomicDataset("cifar100_protect", "train", tmp_path)
    assert f"python -m data_scripts.prepare --datasets cifar100_protect --root {tmp_path}" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    monkeypatch.undo()
    logs = []
    P.prepare(["cifar100_protect"], tmp_path, download=False, progress=False, log=logs.append, verify_checksums=False)
    assert len(td.TaxonomicDataset("cifar100_protect", "test", tmp_path)) == 8
    P.prepare(["cifar100_protect"], tmp_path, download=False, progress=False, log=logs.append, verify_checksums=False)
    assert "already prepared" in logs[-1]
    assert P.prepare(["cifar100_protect"], tmp_path, download=False, force=True, **QUIET)


def test_a_truncated_archive_is_reported_and_nothing_looks_prepared(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "cifar100_protect"))
    archive = tmp_path / "downloads" / "cifar-100-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-300])
    with pytest.raises(DataPreparationError, match="cifar-100-python.tar.gz is truncated or corrupt"):
        P.prepare(["cifar100_protect"], tmp_path, download=False, **QUIET)
    assert not (tmp_path / "cifar100_protect" / td.MARKER_NAME).exists()
    assert not (tmp_path / "raw" / "cifar100_protect" / ".extracted-cifar-100-python.tar.gz").exists()


def test_a_wrong_checksum_stops_before_anything_is_unpacked(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "cifar100_protect"))
    with pytest.raises(DataPreparationError, match="has md5 .*expected eb9058c3a382ffc7106e4002c42a8d85"):
        P.prepare(["cifar100_protect"], tmp_path, download=False, progress=False, log=print)  # checksums on
    assert not (tmp_path / "raw" / "cifar100_protect").exists()


def test_a_missing_imagenet_names_the_argument_and_the_step(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "imagenet_protect"))
    with pytest.raises(DataPreparationError) as err:
        P.prepare(["imagenet_protect"], tmp_path, download=False, **QUIET)
    message = str(err.value)
    assert "imagenet_protect" in message and "MANUAL STEP" in message and "--imagenet-root" in message
    assert "image-net.org" in message and "ILSVRC2012_img_val.tar" in message
    empty = tmp_path / "imagenet"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(DataPreparationError, match="12 ImageNet images are missing.*--imagenet-root"):
        P.prepare(["imagenet_protect"], tmp_path, download=False, imagenet_root=empty, **QUIET)
    assert not (tmp_path / "imagenet_protect" / td.MARKER_NAME).exists()


def test_a_missing_rare_species_copy_names_the_argument_and_how_to_get_it(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "rare_species"))
    with pytest.raises(DataPreparationError, match=r"--rare-species-root.*huggingface-cli download imageomics/rare-species"):
        P.prepare(["rare_species"], tmp_path, download=False, **QUIET)


def test_a_missing_annotation_file_names_its_url(tmp_path):
    with pytest.raises(DataPreparationError, match="sun324_tree.npy is missing.*raw.githubusercontent.com/gina9726"):
        P.prepare(["sun324"], tmp_path, download=False, **QUIET)


def test_a_label_outside_the_hierarchy_or_a_bad_cut_stops_the_preparation(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "rare_species"))
    gt = tmp_path / "downloads" / "rare_species_gt_test.txt"
    gt.write_text(gt.read_text().replace(",2,2\n", ",7,2\n"))
    with pytest.raises(DataPreparationError, match=r"labels \[7\] are outside the hierarchy"):
        P.prepare(["rare_species"], tmp_path, download=False, **_options(fs), **QUIET)
    _install(fs, tmp_path, {"rare_species_gt_test.txt"})
    cuts = tmp_path / "downloads" / "rare_species_treecuts_25_multi.pkl"
    torch.save({0: [("chordata", "mollusca"), [0, 1, 1]]}, cuts)  # the mapping does not fit the names
    with pytest.raises(DataPreparationError, match=r"cut 0: 0 nodes of the tree fit cut entry 0 \('chordata'\)"):
        P.prepare(["rare_species"], tmp_path, download=False, **_options(fs), **QUIET)
    assert not (tmp_path / "rare_species" / td.MARKER_NAME).exists()


@pytest.mark.parametrize("name", KEYS)
def test_readers_of_an_unprepared_folder_name_the_command(tmp_path, name):
    with pytest.raises(td.DatasetNotPreparedError) as err:
        td.TaxonomicDataset(name, "test", tmp_path)
    assert f"python -m data_scripts.prepare --datasets {name} --root {tmp_path}" in str(err.value)
    with pytest.raises(ValueError, match="subset must be one of"):
        td.TaxonomicDataset(name, "test", tmp_path, subset="seen")


def test_the_sample_list_parser_checks_its_lines(tmp_path):
    path = tmp_path / "gt_test.txt"
    path.write_text("a,b/x.jpg,3,0\nc.jpg,1,1\n")  # a comma inside a path is kept
    assert td.read_samples(path) == [("a,b/x.jpg", 3), ("c.jpg", 1)]
    path.write_text("c.jpg,1,0\nd.jpg,x,1\n")
    with pytest.raises(ValueError, match="line 2: expected 'path,label,index'"):
        td.read_samples(path)
    path.write_text("c.jpg,1,5\n")
    with pytest.raises(ValueError, match="line 1: index 5, expected 0"):
        td.read_samples(path)


# ----------------------------------------------------------------------------
# few-shot sampling
# ----------------------------------------------------------------------------
def test_few_shot_indices_follow_the_nshot_rule_and_are_deterministic():
    labels = [2, 0, 1, 0, 2, 1, 0, 2, 0, 1, 2, 0]
    picks = td.few_shot_indices(labels, 2, seed=0)
    assert len(picks) == 6 and [labels[i] for i in picks] == [0, 0, 1, 1, 2, 2]
    assert len(set(picks)) == 6 and picks == td.few_shot_indices(labels, 2, seed=0)
    # class i: randperm of its positions from a generator seeded with seed + i, first `shots` kept
    for i in (0, 1, 2):
        positions = [k for k, l in enumerate(labels) if l == i]
        perm = torch.randperm(len(positions), generator=torch.Generator().manual_seed(5 + i))[:2].tolist()
        assert td.few_shot_indices(labels, 2, seed=5)[2 * i: 2 * i + 2] == [positions[p] for p in perm]
    assert [labels[i] for i in td.few_shot_indices(labels, 3, seed=1)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="class 1 has 3"):
        td.few_shot_indices(labels, 4)
    with pytest.raises(ValueError, match="shots must be an integer >= 1"):
        td.few_shot_indices(labels, 0)
    with pytest.raises(ValueError, match="integer labels"):
        td.few_shot_indices([0.5, 1.0], 1)


def test_the_few_shot_sampler_visits_the_picks_in_the_same_order_every_epoch():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2, 2])
    sampler = td.FewShotSampler(labels, 2, seed=3)
    first, second = list(sampler), list(sampler)
    assert first == second and len(sampler) == 6 and sorted(first) == sorted(sampler.indices)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(3)).tolist()
    assert first == [sampler.indices[i] for i in order] and td.few_shot_order(6, 3) == order


# ----------------------------------------------------------------------------
# the base/novel split
# ----------------------------------------------------------------------------
def test_the_quota_rule_on_the_design_example_rounds_halves_to_even():
    tree = _design_tree()  # leaves a1 (under A), b1, b2 (under B), c (under the root)
    quotas = td.base_novel_quotas(tree)
    # q = 2; A: round(0.5) = 0, B: round(1.0) = 1, root: round(0.5) = 0; total 1; +1 to B (largest group)
    assert quotas == {tree.node("A"): 0, tree.node("B"): 2, 0: 0}
    split = td.base_novel_split(tree)
    assert split.base == (1, 2) and split.novel == (0, 3)  # b1, b2 | a1, c: no choice left to the draws
    assert split.relabel_base == {1: 0, 2: 1} and split.relabel_novel == {0: 0, 3: 1}


def test_the_quota_rule_takes_one_from_the_largest_group_when_rounding_overshoots():
    # 9 leaves under P (5), Q (3), R (1): q = 5; round(25/9) = 3, round(15/9) = 2, round(5/9) = 1 -> 6; P loses one
    tree = TaxonomicTree.from_nested("root", {"P": [f"p{i}" for i in range(5)], "Q": ["q0", "q1", "q2"], "R": ["r0"]})
    quotas = td.base_novel_quotas(tree)
    assert quotas == {tree.node("P"): 2, tree.node("Q"): 2, tree.node("R"): 1}
    split = td.base_novel_split(tree)
    assert len(split.base) == 5 and len(split.novel) == 4 and not set(split.base) & set(split.novel)
    under = {g: sum(tree.parents[tree.leaves[l]] == tree.node(g) for l in split.base) for g in "PQR"}
    assert under == {"P": 2, "Q": 2, "R": 1}
    assert split == td.base_novel_split(tree, 42)
    # the draws are random.Random(42)'s: P's two, then Q's two, then R's one
    rng = random.Random(42)
    p, q = rng.sample(list(range(0, 5)), 2), rng.sample(list(range(5, 8)), 2)
    assert split.base == tuple(sorted(p + q + [8]))


def test_subtree_keeps_the_depth_first_order_and_relabels():
    tree = _design_tree()
    sub, relabel = td.subtree(tree, [3, 0])
    assert sub.names == ("root", "A", "a1", "c") and sub.label_names == ("a1", "c")
    assert relabel == {0: 0, 3: 1} and sub.tree_of_dfs == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="distinct leaf labels"):
        td.subtree(tree, [0, 0])


def test_pickle_module_is_the_standard_one():
    # the restricted reader subclasses the standard unpickler; a plain dict of ints passes
    data = pickle.dumps({1: 0}, protocol=3)
    assert RestrictedUnpickler(__import__("io").BytesIO(data)).load() == {1: 0}


def test_a_stored_cut_is_matched_by_its_prompt_texts_and_leaves():
    from data_scripts.taxonomic_common import match_cut

    # a chain: "big_cat" is the only child of "felid", both cover the same leaves
    tree = TaxonomicTree.from_nested("root", {"felid": {"big_cat": ["lion", "tiger"]}, "dog_1": None})
    cut = match_cut(tree, ("big cat", "dog"), [0, 0, 1])  # ProTeCt's texts: "_" -> " ", digits dropped
    assert cut.names == ("big_cat", "dog_1") and cut.mapping == (0, 0, 1)
    assert match_cut(tree, ("felid", "dog"), [0, 0, 1]).names == ("felid", "dog_1")
    with pytest.raises(DataPreparationError, match="0 nodes of the tree fit cut entry 0"):
        match_cut(tree, ("felid", "dog"), [0, 1, 1])
    twins = TaxonomicTree.from_nested("root", {"n1": {"n2": ["a", "b"]}, "c": None})  # both clean to "n"
    with pytest.raises(DataPreparationError, match="2 nodes of the tree fit cut entry 0"):
        match_cut(twins, ("n", "c"), [0, 0, 1])
    with pytest.raises(DataPreparationError, match="must send the 3 leaves"):
        match_cut(tree, ("felid",), [0, 0])


def test_without_protects_imagenet_training_list_it_is_made_from_the_folder(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path, _names_of(fs, "imagenet_protect") - {"imagenet_protect_gt_train.txt"})
    logs = []
    P.prepare(["imagenet_protect"], tmp_path, download=False, imagenet_root=fs.imagenet_root, progress=False,
              log=logs.append)
    assert any("imagenet_protect_gt_train.txt is not available" in line for line in logs)
    ds = td.TaxonomicDataset("imagenet_protect", "train", tmp_path)
    assert list(zip(ds.paths, ds.labels)) == fs.expected["imagenet_protect"]["train"]  # label order, sorted files
    marker = td.check_prepared("imagenet_protect", root=tmp_path)
    assert marker["sources"]["train_list"].startswith("made from train/<wnid>/*.JPEG")
