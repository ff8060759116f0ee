"""The official evaluation vocabularies: CAT-Seg's ``datasets/*.json`` name lists.

CAT-Seg's ``eval.sh`` (run unchanged by HyperCLIP, HyRo and H-CLIP) gives the model, for each
benchmark, the class names of one JSON file (``MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON``), and trains
on COCO-Stuff with ``datasets/coco.json`` (``TRAIN_CLASS_JSON``). These lists are not always the
names in the datasets' own metadata: PC-59's ``pc59.json`` says "diningtable" where the
PASCAL-Context label list says "table", ADE20K-150's ``ade150.json`` keeps only the first
synonym of each class (and spells one "bed " with a trailing space), ADE20K-847's
``ade847.json`` keeps the WordNet synonym lists. The preparation therefore downloads the JSON
files themselves, from URLs pinned to CAT-Seg commit ``dc295eeb751821dfdbe49fc19285d588c8a5b71f``
(the main branch as a fallback), checks each against the SHA-256 of its canonical content
(:func:`data_scripts.download.names_digest`: the parsed list, serialised compactly, so that
whitespace between entries and a final newline do not matter), and stores it as the benchmark's
``eval_class_names``; the names read from the metadata stay as ``class_names``. The files are
data of CAT-Seg's repository and are never copied into this one.
"""
from __future__ import annotations

import json

from .common import Context, FormatError
from .download import Download, names_digest

__all__ = ["CATSEG_COMMIT", "VOCABULARIES", "vocabulary_download", "read_vocabulary"]

#: The CAT-Seg commit the vocabulary URLs (and their checksums) are pinned to.
CATSEG_COMMIT = "dc295eeb751821dfdbe49fc19285d588c8a5b71f"
_RAW = "https://raw.githubusercontent.com/cvlab-kaist/CAT-Seg"


def vocabulary_download(filename: str, names_sha256: str, count: int, size_note: str) -> Download:
    """The :class:`Download` of CAT-Seg's ``datasets/<filename>``: pinned URL, then main."""
    return Download(
        filename,
        (f"{_RAW}/{CATSEG_COMMIT}/datasets/{filename}", f"{_RAW}/main/datasets/{filename}"),
        names_sha256=names_sha256,
        size_note=size_note,
        description=f"CAT-Seg's evaluation vocabulary datasets/{filename} ({count} names)",
    )


#: benchmark key -> (its vocabulary download, the number of names). The checksums are SHA-256 of
#: the canonical lists at :data:`CATSEG_COMMIT`.
VOCABULARIES: dict[str, tuple[Download, int]] = {
    "coco_stuff": (vocabulary_download(
        "coco.json", "f21ff731f4e7c445d373ecc6f2a25381ac46918af694b56f8ff43e29092723fd", 171,
        "2 KB"), 171),
    "ade20k_150": (vocabulary_download(
        "ade150.json", "11a038c43840900c9b815faaca91182dc55ae5f8968deb7bb4d48c217233f4ff", 150,
        "2 KB"), 150),
    "ade20k_847": (vocabulary_download(
        "ade847.json", "3e49b07d9a35a6513d89b10393d0dcf7da33bb30afb1b8d54810de201e99d649", 847,
        "15 KB"), 847),
    "pascal_context_59": (vocabulary_download(
        "pc59.json", "972fd851d6738c6407e5b3d3b948d1c2664bb54a6aa3eb532792061200582f01", 59,
        "1 KB"), 59),
    "pascal_context_459": (vocabulary_download(
        "pc459.json", "c3861f6cb2fa8da2d4b3787313359c9868236311dcbe5a7ecf78ffebf6ae4db0", 459,
        "5 KB"), 459),
    "voc20": (vocabulary_download(
        "voc20.json", "50eb0b8b8f424312b26e443f0b152995b0745b720a18a00bbd8144a37f71fc66", 20,
        "1 KB"), 20),
    "voc20b": (vocabulary_download(
        "voc20b.json", "03db8c03408da29eec0da9f92c6f0734fc04a66b7c79d4189f08a9912d0aadb9", 59,
        "1 KB"), 59),
}


def read_vocabulary(key: str, ctx: Context) -> tuple[list[str], dict]:
    """The official vocabulary of benchmark ``key`` as the JSON spells it, and its sources.

    Raises :class:`~data_scripts.common.FormatError` unless the file holds a list of the expected
    number of strings. The sources record the file, the pinned commit, the canonical SHA-256 of
    the list used and whether it equals the pinned one (it may differ only when checksums were
    skipped, e.g. for the miniature fixtures, or when the main-branch fallback has changed).
    """
    download, count = VOCABULARIES[key]
    path = ctx.file(download)
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(
            f"{path} is not a readable JSON file ({exc}); delete it and run again"
        ) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FormatError(f"{path} must hold a JSON list of class names")
    if len(names) != count:
        raise FormatError(f"{download.filename} must list {count} names, got {len(names)}")
    digest = names_digest(path)
    sources = {
        "eval_class_names": f"CAT-Seg datasets/{download.filename} (pinned to commit "
                            f"{CATSEG_COMMIT}, main branch as fallback)",
        "eval_class_names_sha256": digest,
        "eval_class_names_match_pinned": digest == download.names_sha256,
    }
    return names, sources
