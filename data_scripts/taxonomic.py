"""Tree alignment's four datasets: CIFAR-100, SUN-324, ImageNet and Rare Species with their taxonomies.

Every dataset is prepared from two kinds of files (layout of the result:
:mod:`hyro_edu.data.taxonomic_datasets`):

1. **Annotations** of ProTeCt :cite:`wu2024protect` (``gina9726/ProTeCt``, ``prepro/data/``) and
   HypModalAlign :cite:`wu2026modality` (``MCISLAB-Manifold-Learning/HypModalAlign``,
   ``prepro/data/``), fetched from raw.githubusercontent.com at the commits where they were read
   (:data:`PROTECT_COMMIT`, :data:`HMA_COMMIT`; ``main`` then ``master`` as fallbacks): the
   image lists ``gt_{train,test}.txt``, the pickled tree ``tree.npy`` and ``leaf_nodes.npy``
   (read with a restricted unpickler: :mod:`data_scripts.taxonomic_common`), the 25 stored tree
   cuts ``treecuts_25_multi.pkl`` and HypModalAlign's base/novel files
   (``relabeler_{base,novel}.npy``, ``treecuts_25_multi_{base,novel}.pkl``). No checksum is
   known for them; the parse checks their structure (depth-first ids, leaf order, cut mappings).
   Each is saved in ``<root>/downloads/`` as ``<key>_<file name>``.
2. **Images**:

   * ``cifar100_protect``: Krizhevsky's ``cifar-100-python.tar.gz`` (MD5 from
     ``torchvision.datasets.CIFAR100``). ProTeCt's lists name files of its hierarchical folder
     copy, ``<wordnet path>/<leaf>/<split>_<CIFAR file name>`` (for example
     ``physical_entity/object/mountain/test_mount_s_001582.png``); each is written as a PNG
     under ``<root>/cifar100_protect/images/`` from the python batch ``<split>`` entry whose
     ``filenames`` value is the CIFAR file name. Where a file name occurs twice in a batch
     (the folder copy has 49,900 training files, not 50,000: same-named files overwrote each
     other), the entry whose fine label names the leaf folder is taken, else the last one.
   * ``sun324``: ``SUN397.tar.gz`` (Princeton, about 37 GB; MD5 from
     ``torchvision.datasets.SUN397``), unpacked into ``<root>/raw/sun324/SUN397/``, which the
     list paths (``o/orchard/sun_*.jpg``) are relative to. No image is copied.
   * ``imagenet_protect``: the user's ILSVRC-2012 folder (``--imagenet-root DIR``, an
     image-net.org account is needed): ``DIR/train/<wnid>/*.JPEG`` and ``DIR/val/`` (the lists
     say ``val/<wnid>/<file>``; a flat ``val/<file>`` is found too). No image is copied. The
     tree falls back to Deep-RTC's (:data:`DEEP_RTC_COMMIT`) and the training list to one made
     from the folder (:class:`ImageNetProTeCt`).
   * ``rare_species``: the user's copy of the Hugging Face dataset ``imageomics/rare-species``
     (``--rare-species-root DIR``, holding its ``metadata.csv`` and the images it names in
     ``file_name``). HypModalAlign's lists name ``<phylum>_<class>_<order>_<family>_<genus>_<species>/<rarespecies_id>.jpg``
     (lower case: its ``extract_rarespecies.py``); each is found through ``metadata.csv``. No
     image is copied (HypModalAlign's copies are re-encoded by PIL; these are the originals).

The base/novel split is computed (:func:`hyro_edu.data.taxonomic_datasets.base_novel_split`,
seed 42) and compared with HypModalAlign's relabelers; where they differ the stored split is
used (it defines the paper's numbers) and the marker's sources say so.
"""
from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from hyro_edu.data import taxonomic_datasets as td
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree

from .common import Context, FormatError, ensure_downloads
from .download import Download, DownloadError, ManualStepRequired
from .hvsa_common import save_json
from .taxonomic_common import (RestrictedUnpickler, TaxonomicPreparer, TaxonomicResult, load_npy_object,
                               read_leaf_nodes, read_relabeler, taxonomy_from_treelibs, write_cuts, write_text)

__all__ = [
    "PROTECT_COMMIT",
    "HMA_COMMIT",
    "DEEP_RTC_COMMIT",
    "CIFAR100_ARCHIVE",
    "SUN397_ARCHIVE",
    "IMAGENET_MANUAL",
    "RARE_SPECIES_MANUAL",
    "RARE_SPECIES_RANKS",
    "annotation_download",
    "read_cifar_batch",
    "rare_species_folder",
    "TaxonomicDatasetPreparer",
    "Cifar100ProTeCt",
    "Sun324",
    "ImageNetProTeCt",
    "RareSpecies",
]

#: The commit of gina9726/ProTeCt whose ``prepro/data`` files are fetched first.
PROTECT_COMMIT = "a0aa88e1e80e040cd8497537dc68b81f71d80900"
#: The commit of MCISLAB-Manifold-Learning/HypModalAlign whose ``prepro/data`` files are fetched first.
HMA_COMMIT = "c47358ca5fa00c645b514d93c6272a3527c6e7a6"
#: The commit of gina9726/Deep-RTC (ProTeCt's predecessor, same ``treelibs``) whose ImageNet
#: ``tree.npy`` is the last fallback: ProTeCt's stored snapshot has ImageNet's lists and leaf
#: labels but no ``tree.npy``. ProTeCt's ``leaf_nodes.npy`` must agree with it (checked).
DEEP_RTC_COMMIT = "daadf9901d262ef642fe7f33eb8a78382c2753a8"
_REPOS = {
    "protect": ("https://raw.githubusercontent.com/gina9726/ProTeCt", PROTECT_COMMIT),
    "hma": ("https://raw.githubusercontent.com/MCISLAB-Manifold-Learning/HypModalAlign", HMA_COMMIT),
}
CIFAR100_ARCHIVE = Download(
    "cifar-100-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    extract_to="cifar100_protect",
    size_note="161 MiB",
    description="CIFAR-100, python version (Krizhevsky)",
)
SUN397_ARCHIVE = Download(
    "SUN397.tar.gz",
    ("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",),
    md5="8ca2778205c41d23104230ba66911c7a",
    extract_to="sun324",
    size_note="about 37 GB",
    description="SUN397 images (Princeton)",
)
IMAGENET_MANUAL = (
    "imagenet_protect needs the ILSVRC-2012 train and val images: with an image-net.org account, download "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, unpack them into DIR/train/<wnid>/*.JPEG (unpack the "
    "per-class tars too) and DIR/val/ (in <wnid>/ folders or flat), and pass --imagenet-root DIR."
)
RARE_SPECIES_MANUAL = (
    "Rare Species needs a copy of the Hugging Face dataset imageomics/rare-species: download it with "
    "`huggingface-cli download imageomics/rare-species --repo-type dataset --local-dir DIR` (or `git lfs install; "
    "git clone https://huggingface.co/datasets/imageomics/rare-species DIR`) and pass --rare-species-root DIR; "
    "DIR must hold metadata.csv and the images it lists."
)
#: The taxonomic ranks that name a Rare Species folder, in order.
RARE_SPECIES_RANKS = ("phylum", "class", "order", "family", "genus", "species")


def annotation_download(key: str, repo: str, folder: str, filename: str) -> Download:
    """The :class:`~data_scripts.download.Download` of ``prepro/data/<folder>/<filename>`` of
    ``repo`` (``"protect"`` or ``"hma"``), saved as ``<key>_<filename>``."""
    base, commit = _REPOS[repo]
    return Download(
        f"{key}_{filename}",
        tuple(f"{base}/{ref}/prepro/data/{folder}/{filename}" for ref in (commit, "main", "master")),
        description=f"{filename} of {base.rsplit('/', 2)[-2]}/{base.rsplit('/', 1)[-1]} (no checksum known; "
                    "the parse checks it)",
    )


def read_cifar_batch(path) -> dict:
    """A batch of CIFAR-100's python version (``train``, ``test`` or ``meta``), read safely.

    The batches are Python 2 pickles of dicts; they are read with
    :class:`~data_scripts.taxonomic_common.RestrictedUnpickler` (NumPy arrays only) and the
    byte-string keys and names are decoded. :class:`FormatError` if the file is not such a dict.
    """
    try:
        with open(path, "rb") as f:
            raw = RestrictedUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise FormatError(f"{path} is not a CIFAR-100 python batch ({exc})") from None
    if not isinstance(raw, dict):
        raise FormatError(f"{path} is not a CIFAR-100 python batch (no dict)")

    def text(v):
        return v.decode("latin1") if isinstance(v, bytes) else v

    return {text(k): ([text(x) for x in v] if isinstance(v, list) else v) for k, v in raw.items()}


def rare_species_folder(row: dict) -> str:
    """HypModalAlign's folder name of a Rare Species image: the six ranks, lower case, joined by "_"."""
    return "_".join(str(row[k]).lower() for k in RARE_SPECIES_RANKS)


class TaxonomicDatasetPreparer(TaxonomicPreparer):
    """One dataset: its annotation files (``folder`` of ProTeCt or HypModalAlign) and its images.

    Subclasses set ``key``, ``protect_folder`` (``None``: every annotation comes from
    HypModalAlign), ``hma_folder`` and implement :meth:`images`.
    """

    protect_folder = None
    hma_folder = ""
    image_downloads: tuple = ()
    #: Annotation roles the preparation can do without (:meth:`images` then makes up for them).
    optional_roles: tuple = ()

    def annotations(self) -> dict[str, Download]:
        """The annotation downloads by role."""
        main_repo, main_folder = ("protect", self.protect_folder) if self.protect_folder else ("hma", self.hma_folder)
        files = {role: annotation_download(self.key, main_repo, main_folder, name) for role, name in (
            ("tree", "tree.npy"), ("leaf_nodes", "leaf_nodes.npy"), ("train", "gt_train.txt"),
            ("test", "gt_test.txt"), ("cuts", "treecuts_25_multi.pkl"))}
        for subset in ("base", "novel"):
            files[f"relabeler_{subset}"] = annotation_download(self.key, "hma", self.hma_folder,
                                                               f"relabeler_{subset}.npy")
            files[f"cuts_{subset}"] = annotation_download(self.key, "hma", self.hma_folder,
                                                          f"treecuts_25_multi_{subset}.pkl")
        return files

    def downloads(self, ctx: Context):
        return [*self.annotations().values(), *self.image_downloads]

    def required_downloads(self, ctx: Context):
        optional = {self.annotations()[role].filename for role in self.optional_roles}
        return [d for d in self.downloads(ctx) if d.filename not in optional]

    def images(self, ctx: Context, samples: dict, tree: TaxonomicTree) -> tuple[dict, str, bool, dict]:
        """``(samples with resolved paths, image root, relative to the data root?, sources)``."""
        raise NotImplementedError

    def convert(self, ctx: Context) -> TaxonomicResult:
        files = self.annotations()
        path = {role: ctx.file(d) for role, d in files.items()}
        tree = taxonomy_from_treelibs(load_npy_object(path["tree"]), files["tree"].filename)
        leaf_nodes = read_leaf_nodes(path["leaf_nodes"])
        if leaf_nodes != {name: label for label, name in enumerate(tree.label_names)}:
            raise FormatError(f"{files['leaf_nodes'].filename} does not give the labels of {files['tree'].filename}")
        samples = {}
        for split in self.splits(ctx):
            if split in self.optional_roles:
                try:
                    ensure_downloads([files[split]], ctx)
                except (DownloadError, ManualStepRequired) as exc:
                    ctx.log(f"note: {self.key}: {files[split].filename} is not available ({exc}); "
                            f"the {split} list is made from the images instead")
                    samples[split] = None
                    continue
            try:
                pairs = td.read_samples(path[split])
            except ValueError as exc:
                raise FormatError(str(exc)) from None
            bad = sorted({l for _, l in pairs if not 0 <= l < tree.num_labels})
            if bad:
                raise FormatError(f"{files[split].filename}: labels {bad[:5]} are outside the hierarchy "
                                  f"(it has {tree.num_labels} leaves)")
            samples[split] = pairs
        samples, image_root, relative, image_sources = self.images(ctx, samples, tree)
        missing = [s for s, pairs in samples.items() if pairs is None]
        if missing:  # pragma: no cover - images() must fill every optional list
            raise FormatError(f"{self.key}: no {missing[0]} list")
        out = td.dataset_dir(self.key, ctx.root)
        written = []
        for split, pairs in samples.items():
            write_text("".join(f"{p},{l},{i}\n" for i, (p, l) in enumerate(pairs)), out / f"gt_{split}.txt")
            written.append(f"gt_{split}.txt")
        split_sources, subtrees = self._base_novel(ctx, tree, path, files, out)
        save_json(td.tree_to_json(tree), out / "tree.json")
        written += ["tree.json", "tree_base.json", "tree_novel.json", "base_novel.json"]
        cut_counts = {}
        for subset, role, name in (("all", "cuts", "cuts_25.json"), ("base", "cuts_base", "cuts_25_base.json"),
                                   ("novel", "cuts_novel", "cuts_25_novel.json")):
            sub = tree if subset == "all" else subtrees[subset]
            cut_counts[subset] = write_cuts(path[role], sub, out / name, files[role].filename)
            written.append(name)
        info = td.dataset_info(self.key)
        if len(tree) != info.num_nodes or tree.num_labels != info.num_labels:
            ctx.log(f"note: {self.key}'s tree has {len(tree)} nodes and {tree.num_labels} leaves; the full "
                    f"dataset's has {info.num_nodes} and {info.num_labels}")
        sources = {
            "annotations": {role: d.urls[0] for role, d in files.items()},
            "tree": f"{len(tree)} nodes, {tree.num_labels} leaves, depth {max(tree.depths)}",
            "cuts": cut_counts,
            **split_sources,
            **image_sources,
        }
        return TaxonomicResult({s: len(p) for s, p in samples.items()}, written, image_root, relative, sources)

    def _base_novel(self, ctx, tree, path, files, out: Path) -> dict:
        split = td.base_novel_split(tree, td.BASE_NOVEL_SEED)
        computed = {"base": split.relabel_base, "novel": split.relabel_novel}
        used, agree = {}, {}
        for subset in ("base", "novel"):
            stored = read_relabeler(path[f"relabeler_{subset}"])
            agree[subset] = stored == computed[subset]
            used[subset] = stored
        if not all(agree.values()):
            ctx.log(f"note: {self.key}: the base/novel split computed with seed {td.BASE_NOVEL_SEED} differs from "
                    "HypModalAlign's relabelers; using the stored ones")
        base, novel = sorted(used["base"]), sorted(used["novel"])
        if sorted(base + novel) != list(range(tree.num_labels)):
            raise FormatError(f"{files['relabeler_base'].filename} and {files['relabeler_novel'].filename} "
                              "must split the labels into two disjoint sets")
        record = {"seed": td.BASE_NOVEL_SEED, "base": base, "novel": novel,
                  "computed_agrees_with_stored": agree}
        subtrees = {}
        for subset, labels in (("base", base), ("novel", novel)):
            sub, relabel = td.subtree(tree, labels)
            if relabel != used[subset]:
                raise FormatError(f"{files[f'relabeler_{subset}'].filename} does not relabel in depth-first order")
            save_json(td.tree_to_json(sub), out / f"tree_{subset}.json")
            subtrees[subset] = sub
            record[f"relabel_{subset}"] = {str(k): v for k, v in relabel.items()}
        save_json(record, out / "base_novel.json")
        return {"base_novel": {"sizes": [len(base), len(novel)], "computed_agrees_with_stored": agree}}, subtrees


class Cifar100ProTeCt(TaxonomicDatasetPreparer):
    key = "cifar100_protect"
    protect_folder = "cifar100"
    hma_folder = "cifar100"
    image_downloads = (CIFAR100_ARCHIVE,)

    def images(self, ctx, samples, tree):
        folder = ctx.raw / "cifar100_protect" / "cifar-100-python"
        meta = read_cifar_batch(folder / "meta")
        fine_names = meta.get("fine_label_names")
        if not isinstance(fine_names, list) or len(fine_names) != 100:
            raise FormatError(f"{folder / 'meta'} lacks the 100 fine label names; is {CIFAR100_ARCHIVE.filename} complete?")
        batches, index = {}, {}
        out = td.dataset_dir(self.key, ctx.root) / "images"
        written = mismatched = 0
        for split, pairs in samples.items():
            for rel, _ in pairs:
                parts = Path(rel).parts
                prefix, _, cifar_name = parts[-1].partition("_")
                if prefix not in ("train", "test") or not cifar_name:
                    raise FormatError(f"{self.key} gt_{split}.txt: {rel!r} is not '<path>/<train|test>_<CIFAR file>'")
                if prefix not in batches:
                    batch = read_cifar_batch(folder / prefix)
                    if not {"data", "filenames", "fine_labels"} <= set(batch):
                        raise FormatError(f"{folder / prefix} lacks data, filenames or fine_labels")
                    batches[prefix] = batch
                    names: dict = {}
                    for i, n in enumerate(batch["filenames"]):
                        names.setdefault(n, []).append(i)
                    index[prefix] = names
                candidates = index[prefix].get(cifar_name)
                if not candidates:
                    raise FormatError(f"{self.key}: {rel!r} names {cifar_name!r}, which the CIFAR-100 {prefix} batch "
                                      "does not hold")
                leaf = parts[-2] if len(parts) > 1 else ""
                fitting = [i for i in candidates if fine_names[batches[prefix]["fine_labels"][i]] == leaf]
                pick = (fitting or candidates)[-1]
                mismatched += not fitting
                target = out / rel
                if not target.exists():
                    image = np.asarray(batches[prefix]["data"][pick], dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".tmp-{target.name}")
                    Image.fromarray(image).save(tmp, format="PNG")
                    tmp.replace(target)
                    written += 1
        if mismatched:
            ctx.log(f"note: {self.key}: {mismatched} images' CIFAR fine label does not name their leaf folder")
        rel_root = f"{self.key}/images"
        return samples, rel_root, True, {"images": {"archive": CIFAR100_ARCHIVE.urls[0], "written": written,
                                                    "label_name_mismatches": mismatched}}


class Sun324(TaxonomicDatasetPreparer):
    key = "sun324"
    protect_folder = "sun"
    hma_folder = "sun"
    image_downloads = (SUN397_ARCHIVE,)

    def images(self, ctx, samples, tree):
        base = ctx.raw / "sun324"
        if (base / "SUN397").is_dir():
            found = [base / "SUN397"]
        else:  # an archive repacked with another top folder
            found = sorted(p for p in base.rglob("SUN397") if p.is_dir()) if base.is_dir() else []
        if len(found) != 1:
            raise FormatError(f"{ctx.raw / 'sun324'} should hold one SUN397 folder, found {len(found)}: "
                              f"is {SUN397_ARCHIVE.filename} complete?")
        missing = [p for pairs in samples.values() for p, _ in pairs if not (found[0] / p).is_file()]
        if missing:
            raise FormatError(f"{len(missing)} SUN images are missing from {found[0]}, e.g. {', '.join(missing[:3])}; "
                              f"is {SUN397_ARCHIVE.filename} complete?")
        return samples, found[0].relative_to(ctx.root).as_posix(), True, {"images": SUN397_ARCHIVE.urls[0]}


class ImageNetProTeCt(TaxonomicDatasetPreparer):
    """ProTeCt's ImageNet. Its training list (``gt_train.txt``) was not in the stored snapshot of
    ProTeCt's repository; when it cannot be fetched, the list is made from the ImageNet folder:
    every ``train/<wnid>/*.JPEG``, classes in label order (each wnid's label read off the test
    list's ``val/<wnid>/`` paths), files sorted by name. The few-shot draws then pick other images
    than ProTeCt's (the marker's sources say which list was used)."""

    key = "imagenet_protect"
    protect_folder = "imagenet"
    hma_folder = "imagenet"
    optional_roles = ("train",)

    def annotations(self) -> dict[str, Download]:
        """As for every dataset, with Deep-RTC's ImageNet tree as the last source of ``tree.npy``."""
        files = super().annotations()
        tree = files["tree"]
        deep_rtc = f"https://raw.githubusercontent.com/gina9726/Deep-RTC/{DEEP_RTC_COMMIT}/prepro/data/imagenet/tree.npy"
        files["tree"] = Download(tree.filename, (*tree.urls, deep_rtc), description=tree.description)
        return files

    def manual_steps(self, ctx: Context) -> list[str]:
        """What ``--dry-run`` lists besides the downloads: the ImageNet folder, if not given or incomplete."""
        root = ctx.imagenet_root
        if root is None:
            return [f"{self.key}: ImageNet (--imagenet-root): MANUAL STEP: {IMAGENET_MANUAL}"]
        if not (root / "train").is_dir() or not (root / "val").is_dir():
            return [f"{self.key}: ImageNet (--imagenet-root {root}): MANUAL STEP: {root} has no train/ and val/ "
                    "folders. " + IMAGENET_MANUAL]
        return []

    def images(self, ctx, samples, tree):
        steps = self.manual_steps(ctx)
        if steps:
            raise ManualStepRequired(steps[0])
        root = ctx.imagenet_root
        sources = {"imagenet_root": str(root), "train_list": "ProTeCt's gt_train.txt"}
        if samples.get("train") is None:
            samples = {**samples, "train": self._train_from_folder(root, samples["test"])}
            sources["train_list"] = "made from train/<wnid>/*.JPEG (ProTeCt's gt_train.txt was not available)"
        resolved, missing = {}, []
        for split, pairs in samples.items():
            out = []
            for rel, label in pairs:
                parts = Path(rel).parts
                candidates = [rel] + ([f"val/{parts[-1]}"] if parts[0] == "val" and len(parts) == 3 else [])
                hit = next((c for c in candidates if (root / c).is_file()), None)
                if hit is None:
                    missing.append(rel)
                else:
                    out.append((hit, label))
            resolved[split] = out
        if missing:
            raise FormatError(f"{len(missing)} ImageNet images are missing from {root}, e.g. {', '.join(missing[:3])}. "
                              + IMAGENET_MANUAL)
        return resolved, str(root), False, sources

    def _train_from_folder(self, root: Path, test: list) -> list:
        label_of = {}
        for rel, label in test:
            parts = Path(rel).parts
            if len(parts) != 3 or parts[0] != "val":
                raise FormatError(f"{self.key}: test path {rel!r} is not 'val/<wnid>/<file>'; the training list "
                                  "cannot be made without gt_train.txt")
            if label_of.setdefault(parts[1], label) != label:
                raise FormatError(f"{self.key}: wnid {parts[1]} has two labels in the test list")
        pairs = []
        for wnid, label in sorted(label_of.items(), key=lambda item: item[1]):
            files = sorted(p.name for p in (root / "train" / wnid).glob("*.JPEG"))
            if not files:
                raise FormatError(f"{self.key}: {root / 'train' / wnid} holds no JPEG files. " + IMAGENET_MANUAL)
            pairs += [(f"train/{wnid}/{name}", label) for name in files]
        return pairs


class RareSpecies(TaxonomicDatasetPreparer):
    key = "rare_species"
    protect_folder = None
    hma_folder = "rarespecies"

    def manual_steps(self, ctx: Context) -> list[str]:
        """What ``--dry-run`` lists besides the downloads: the Hugging Face copy, if not given or incomplete."""
        root = getattr(ctx, "rare_species_root", None)
        if root is None:
            return [f"{self.key}: Rare Species (--rare-species-root): MANUAL STEP: {RARE_SPECIES_MANUAL}"]
        if not (Path(root) / "metadata.csv").is_file():
            return [f"{self.key}: Rare Species (--rare-species-root {root}): MANUAL STEP: {root} has no metadata.csv. "
                    + RARE_SPECIES_MANUAL]
        return []

    def images(self, ctx, samples, tree):
        steps = self.manual_steps(ctx)
        if steps:
            raise ManualStepRequired(steps[0])
        root = Path(ctx.rare_species_root)
        by_name = {}
        with open(root / "metadata.csv", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            needed = {"file_name", "rarespecies_id", *RARE_SPECIES_RANKS}
            if not needed <= set(reader.fieldnames or ()):
                raise FormatError(f"{root / 'metadata.csv'} lacks the columns {sorted(needed - set(reader.fieldnames or ()))}")
            for row in reader:
                by_name[f"{rare_species_folder(row)}/{row['rarespecies_id']}.jpg"] = row["file_name"]
        resolved, missing = {}, []
        for split, pairs in samples.items():
            out = []
            for rel, label in pairs:
                file = by_name.get(rel)
                if file is None or not (root / file).is_file():
                    missing.append(rel)
                else:
                    out.append((file, label))
            resolved[split] = out
        if missing:
            raise FormatError(f"{len(missing)} Rare Species images are missing from {root}, e.g. "
                              f"{', '.join(missing[:3])}. " + RARE_SPECIES_MANUAL)
        return resolved, str(root), False, {"rare_species_root": str(root)}
