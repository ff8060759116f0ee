"""ImCLEF07A and ImCLEF07D (ImageCLEF 2007 medical images, IRMA code; Dimitrovski et al. 2011).

The public hierarchical multi-label benchmark gives every image as 80 integer attributes (0-7; the
ARFF relation is ``ehd``, an edge-histogram descriptor) and its labels as paths in a tree: A is the
anatomy axis of the IRMA code, D the direction axis. Source (no login): the ARFF files of
C-HMCNN's repository, ``HMC_data/others/ImCLEF07{A,D}_{Train,Test}.arff``, fetched from
raw.githubusercontent.com at a pinned commit (with the ``master`` branch as fallback). No checksum
is known; the parse checks the structure instead.

The ARFF format as these files use it::

    @RELATION ehd
    @ATTRIBUTE arg1 NUMERIC            (80 numeric attributes)
    ...
    @ATTRIBUTE class hierarchical 2,2/1,2/1/3,...   (node paths; repeats allowed)
    @DATA
    7,0,5,...,2,2@2/1@2/1/3            (80 values, then the @-joined label paths)

A node's parent is its path prefix (``2/1`` is the parent of ``2/1/3``); the top-level nodes hang
from an implicit root that is not a label. :func:`parse_arff` reads such a file (our own reader,
written for this syntax: ``%`` comments, case-insensitive keywords, no sparse rows, no ``?``
values). The conversion (:class:`ImCLEF07`):

* nodes: the union of the paths the two headers declare (for the real files they agree; the
  marker's sources say whether they did), sorted by depth then path string (C-HMCNN's order);
  ``hierarchy.json`` holds ``names`` and ``parents`` (-1 for top-level nodes);
* labels: multi-hot uint8 over the nodes, closed under ancestors (a row listing only ``2/1/3``
  also gets ``2/1`` and ``2``); a label path the header does not declare stops the preparation;
* splits: ``trainval`` (the 10,000 training rows in file order), ``train``/``val`` (7,000/3,000,
  :func:`hyro_edu.data.hierarchical_datasets.imclef07_split`, seed 0; ``val`` gets 30 % of the
  rows, rounded down, for a file of any size) and ``test`` (the test file's 1,006 rows);
  ``split.json`` lists the row numbers;
* features: float32, unscaled (the values 0-7 as they are).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hyro_edu.data import hierarchical_datasets as hd

from .common import Context, FormatError
from .download import Download
from .hvsa_common import HierarchicalPreparer, HierarchicalResult, out_dir, save_json, save_npy

__all__ = [
    "CHMCNN_COMMIT", "NUM_ATTRIBUTES", "EXPECTED_NODES", "VAL_FRACTION", "SPLIT_SEED", "ArffData", "parse_arff",
    "arff_download", "encode_labels", "ImCLEF07", "ImCLEF07A", "ImCLEF07D",
]

#: The commit of EGiunchiglia/C-HMCNN whose ARFF files the preparation fetches first.
CHMCNN_COMMIT = "06d35feab7067756e288c3b0f3e570a8fb7c99d5"
NUM_ATTRIBUTES = 80
#: Nodes (root excluded) declared by the real headers: A 8 + 25 + 63, D 4 + 16 + 26 (a difference is reported).
EXPECTED_NODES = {"A": 96, "D": 46}
VAL_FRACTION = 0.3
SPLIT_SEED = 0
_RAW = "https://raw.githubusercontent.com/EGiunchiglia/C-HMCNN"


def arff_download(filename: str) -> Download:
    """The :class:`~data_scripts.download.Download` of one of C-HMCNN's ImCLEF07 ARFF files."""
    return Download(
        filename,
        tuple(f"{_RAW}/{ref}/HMC_data/others/{filename}" for ref in (CHMCNN_COMMIT, "master")),
        description=f"C-HMCNN's HMC_data/others/{filename} (no checksum known; the parse checks it)",
    )


@dataclass
class ArffData:
    """A parsed hierarchical ARFF file: relation, attribute names, declared node paths, rows."""

    relation: str
    attributes: list
    hierarchy: list          # the paths of the header, in header order, repeats kept
    features: np.ndarray     # float32 (N, F)
    labels: list             # per row, the label paths as written


_KEYWORD = re.compile(r"^@(relation|attribute|data)\b\s*(.*)$", re.IGNORECASE)


def parse_arff(path) -> ArffData:
    """Parse a hierarchical ARFF file (module docstring); :class:`FormatError` naming the line otherwise."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path} is not a readable UTF-8 text file ({exc})") from None
    relation, attributes, hierarchy = "", [], None
    rows, labels = [], []
    in_data = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        where = f"{path.name}, line {number}"
        if not in_data:
            match = _KEYWORD.match(line)
            if not match:
                raise FormatError(f"{where}: expected @RELATION, @ATTRIBUTE or @DATA, got {line[:60]!r}")
            keyword, rest = match.group(1).lower(), match.group(2).strip()
            if keyword == "relation":
                relation = rest
            elif keyword == "data":
                in_data = True
            else:
                parts = rest.split(None, 2)
                if len(parts) < 2:
                    raise FormatError(f"{where}: an @ATTRIBUTE needs a name and a type, got {line[:60]!r}")
                if hierarchy is not None:
                    raise FormatError(f"{where}: the hierarchical class attribute must be the last attribute")
                if parts[1].lower() == "hierarchical":
                    if len(parts) < 3:
                        raise FormatError(f"{where}: the hierarchical attribute lists no node paths")
                    hierarchy = [p.strip() for p in parts[2].split(",") if p.strip()]
                elif parts[1].lower() in ("numeric", "real", "integer"):
                    attributes.append(parts[0])
                else:
                    raise FormatError(f"{where}: attribute {parts[0]!r} has type {parts[1]!r}; expected NUMERIC")
            continue
        fields = line.split(",")
        if len(fields) != len(attributes) + 1:
            raise FormatError(f"{where}: {len(fields)} fields, expected {len(attributes)} attributes + the labels")
        try:
            rows.append([float(v) for v in fields[:-1]])
        except ValueError:
            raise FormatError(f"{where}: the attribute values must be numbers (no '?'), got {line[:60]!r}") from None
        paths = [p.strip() for p in fields[-1].split("@") if p.strip()]
        if not paths:
            raise FormatError(f"{where}: the row has no label path")
        labels.append(paths)
    if hierarchy is None:
        raise FormatError(f"{path}: no '@ATTRIBUTE class hierarchical' header; is it an HMC ARFF file?")
    if not in_data:
        raise FormatError(f"{path}: no @DATA section; is the file complete?")
    features = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(attributes))
    return ArffData(relation, attributes, hierarchy, features, labels)


def encode_labels(labels, names, source: str = "the data") -> np.ndarray:
    """Multi-hot uint8 (N, len(names)) of the label paths, closed under ancestors (path prefixes).

    :class:`FormatError` if a path (or one of its prefixes) is not in ``names``: a label outside
    the hierarchy.
    """
    index = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(labels), len(names)), dtype=np.uint8)
    for row, paths in enumerate(labels):
        for p in paths:
            parts = p.split("/")
            for depth in range(1, len(parts) + 1):
                node = "/".join(parts[:depth])
                if node not in index:
                    raise FormatError(
                        f"{source}, row {row + 1}: label {p!r} is outside the hierarchy declared by "
                        f"the header ({node!r} is not a declared node)"
                    )
                out[row, index[node]] = 1
    return out


class ImCLEF07(HierarchicalPreparer):
    """Prepare one ImCLEF07 axis (``axis`` "A" or "D") into ``<root>/imclef07a`` (or ``imclef07d``)."""

    axis = "A"

    @property
    def key(self) -> str:
        return f"imclef07{self.axis.lower()}"

    def _files(self):
        return arff_download(f"ImCLEF07{self.axis}_Train.arff"), arff_download(f"ImCLEF07{self.axis}_Test.arff")

    def downloads(self, ctx):
        return list(self._files())

    def convert(self, ctx: Context) -> HierarchicalResult:
        train_file, test_file = (ctx.file(d) for d in self._files())
        train, test = parse_arff(train_file), parse_arff(test_file)
        for data, path in ((train, train_file), (test, test_file)):
            if len(data.attributes) != NUM_ATTRIBUTES:
                raise FormatError(f"{path.name}: {len(data.attributes)} numeric attributes, expected {NUM_ATTRIBUTES}")
        names = hd.sort_paths(train.hierarchy + test.hierarchy)
        try:
            parents = hd.path_parents(names)
        except ValueError as exc:
            raise FormatError(f"{train_file.name}/{test_file.name}: the header skips a level: {exc}") from None
        y_train = encode_labels(train.labels, names, train_file.name)
        y_test = encode_labels(test.labels, names, test_file.name)
        num_val = int(len(train.features) * VAL_FRACTION)
        train_rows, val_rows = hd.imclef07_split(len(train.features), num_val, SPLIT_SEED)
        out = out_dir(self.key, ctx)
        arrays = {
            "train": (train.features[train_rows], y_train[train_rows]),
            "val": (train.features[val_rows], y_train[val_rows]),
            "test": (test.features, y_test),
            "trainval": (train.features, y_train),
        }
        files = []
        for split, (x, y) in arrays.items():
            save_npy(np.ascontiguousarray(x, dtype=np.float32), out / f"features_{split}.npy")
            save_npy(np.ascontiguousarray(y, dtype=np.uint8), out / f"labels_{split}.npy")
            files += [f"features_{split}.npy", f"labels_{split}.npy"]
        depth = [n.count("/") + 1 for n in names]
        headers_agree = set(train.hierarchy) == set(test.hierarchy)
        save_json({"names": names, "parents": parents, "depths": depth,
                   "nodes_per_depth": {str(d): depth.count(d) for d in sorted(set(depth))}},
                  out / "hierarchy.json")
        save_json({"seed": SPLIT_SEED, "rule": "numpy default_rng(seed).permutation(N); last "
                   f"int(N * {VAL_FRACTION}) rows are val", "train_rows": train_rows.tolist(),
                   "val_rows": val_rows.tolist()}, out / "split.json")
        files += ["hierarchy.json", "split.json"]
        if len(names) != EXPECTED_NODES[self.axis]:
            ctx.log(f"note: {self.key} has {len(names)} hierarchy nodes; the full dataset has {EXPECTED_NODES[self.axis]}")
        if not headers_agree:
            ctx.log(f"note: {self.key}: the train and test headers declare different nodes; using their union")
        sources = {
            "files": [d.urls[0] for d in self._files()],
            "relation": train.relation,
            "headers_agree": headers_agree,
            "node_order": "depth, then path string (C-HMCNN)",
            "split": f"trainval = training file; train/val by seed {SPLIT_SEED} (split.json); test = test file",
        }
        return HierarchicalResult({s: len(a[0]) for s, a in arrays.items()}, files, sources)


class ImCLEF07A(ImCLEF07):
    axis = "A"


class ImCLEF07D(ImCLEF07):
    axis = "D"
