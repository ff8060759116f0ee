"""data_scripts: downloads that resume and verify, archives that refuse truncation, and every
benchmark's preparation run on miniature raw data in the real on-disk formats."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from data_scripts import prepare as P
from data_scripts.ade20k import decode_seg, read_847_categories, resize_nearest, resize_shape
from data_scripts.archives import ArchiveError, extract, extraction_marker
from data_scripts import vocabularies as V
from data_scripts.download import (
    DataPreparationError, DownloadError, fetch, fetch_any, names_digest, verify,
)
from data_scripts.fixtures import build_sources
from data_scripts.pascal_context import convert_459, rle_counts_from_string, rle_decode, rle_encode, rle_string_from_counts
from hyro_edu.data import benchmarks as sd

ALL = ["coco_stuff", "ade20k_150", "ade20k_847", "pascal_context_59", "pascal_context_459", "voc20", "voc20b"]
QUIET = dict(progress=False, log=lambda message: None)


def _install(fs, root: Path) -> None:
    """Put the fixture files where downloads land, as if they had been downloaded."""
    (root / "downloads").mkdir(parents=True, exist_ok=True)
    for name, path in fs.files.items():
        shutil.copy(path, root / "downloads" / name)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    return folder, build_sources(folder)


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    _, fs = sources
    root = tmp_path_factory.mktemp("root")
    _install(fs, root)
    # the fixture archives replace real ones, so the known MD5 sums of the VOC tars cannot match
    P.prepare(["all"], root, download=False, verify_checksums=False, **QUIET)
    return root, fs


# ----------------------------------------------------------------------------
# the preparations
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_prepared_labels_follow_the_official_mappings(prepared, name):
    root, fs = prepared
    info = sd.benchmark_info(name)
    manifest = json.loads((root / name / "manifest.json").read_text())
    pairs = [p for split in manifest.values() for p in split]
    assert sorted(Path(lbl).stem for _, lbl in pairs) == sorted(fs.expected[name])
    for image, label in pairs:
        assert (root / image).is_file()
        with Image.open(root / label) as im:
            assert im.mode == ("L" if info.label_suffix == ".png" else "I;16")
            array = np.asarray(im)
        expected = fs.expected[name][Path(label).stem]
        assert array.dtype == expected.dtype and np.array_equal(array, expected), label


@pytest.mark.parametrize("name", ALL)
def test_class_names_come_from_the_metadata_and_the_vocabulary_from_catseg_json(prepared, name):
    root, fs = prepared
    classes = json.loads((root / name / "classes.json").read_text())
    assert classes["class_names"] == fs.class_names[name]
    assert len(classes["class_names"]) == sd.benchmark_info(name).num_classes
    download, count = V.VOCABULARIES[name]
    vocabulary = fs.vocabularies[download.filename]
    assert classes["eval_class_names"] == fs.eval_class_names[name] == vocabulary
    assert len(classes["eval_class_names"]) == count
    if name != "voc20":  # the real voc20.json equals the devkit names, so does the fixture
        assert classes["eval_class_names"] != classes["class_names"]
    sources = classes["sources"]
    assert f"datasets/{download.filename}" in sources["eval_class_names"]
    assert V.CATSEG_COMMIT in sources["eval_class_names"]
    assert sources["eval_class_names_sha256"] == _canonical_sha256(vocabulary)
    assert sources["eval_class_names_match_pinned"] is False  # synthetic names, not CAT-Seg's


def _canonical_sha256(names) -> str:
    """The documented definition, written out here: SHA-256 of the compact JSON of the list."""
    text = json.dumps(names, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_every_vocabulary_is_pinned_with_a_fallback_and_a_checksum():
    assert set(V.VOCABULARIES) == set(ALL)
    files = {d.filename for d, _ in V.VOCABULARIES.values()}
    assert files == {"coco.json", "ade150.json", "ade847.json", "pc59.json", "pc459.json",
                     "voc20.json", "voc20b.json"}
    base = "https://raw.githubusercontent.com/cvlab-kaist/CAT-Seg"
    for key, (d, count) in V.VOCABULARIES.items():
        assert d.urls == (f"{base}/dc295eeb751821dfdbe49fc19285d588c8a5b71f/datasets/{d.filename}",
                          f"{base}/main/datasets/{d.filename}")
        assert len(d.names_sha256) == 64 and int(d.names_sha256, 16) >= 0
        assert d.md5 is None and d.sha256 is None  # the bytes may differ; the list may not
        assert count == (59 if key == "voc20b" else sd.benchmark_info(key).num_classes)
    assert len({d.names_sha256 for d, _ in V.VOCABULARIES.values()}) == 7
    readme = (Path(V.__file__).parent / "README.md").read_text(encoding="utf-8")
    for d, count in V.VOCABULARIES.values():  # the README's table quotes the same sums
        assert f"| `{d.filename}` | {count} | `{d.names_sha256}` |" in readme


def test_the_vocabulary_checksum_is_of_the_canonical_list(sources, tmp_path):
    _, fs = sources
    names = fs.vocabularies["pc59.json"]
    expected = _canonical_sha256(names)
    compact, pretty = tmp_path / "compact.json", tmp_path / "pretty.json"
    compact.write_text(json.dumps(names, separators=(",", ":")), encoding="utf-8")
    pretty.write_text(json.dumps(names, indent=4) + "\n\n", encoding="utf-8")
    assert fs.files["pc59.json"].read_bytes() != pretty.read_bytes()
    for path in (fs.files["pc59.json"], compact, pretty):  # whitespace and newlines do not matter
        assert names_digest(path) == expected
        verify(path, names_sha256=expected)
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps([n.replace("diningtable", "table") for n in names]))
    with pytest.raises(DownloadError, match=f"other class names.*expected {expected}"):
        verify(changed, names_sha256=expected)
    spaced = tmp_path / "spaced.json"  # a space inside a name does matter ("bed " in ade150.json)
    spaced.write_text(json.dumps([names[0] + " "] + names[1:]))
    assert names_digest(spaced) != expected
    swapped = tmp_path / "swapped.json"  # and so does the order
    swapped.write_text(json.dumps(names[1:] + names[:1]))
    assert names_digest(swapped) != expected
    not_a_list = tmp_path / "dict.json"
    not_a_list.write_text(json.dumps({"names": names}))
    with pytest.raises(DownloadError, match="JSON list of class names"):
        names_digest(not_a_list)


def test_prepare_checks_the_vocabulary_against_its_pinned_checksum(sources, tmp_path, monkeypatch):
    _, fs = sources
    _install(fs, tmp_path)
    # ADE20K-150 has no other checksum, so the vocabulary decides. The fixture list is not
    # CAT-Seg's: the pinned checksum refuses it ...
    download, count = V.VOCABULARIES["ade20k_150"]
    with pytest.raises(DataPreparationError,
                       match=f"ade150.json lists other class names.*{download.names_sha256}"):
        P.prepare(["ade20k_150"], tmp_path, download=False, **QUIET)
    assert not (tmp_path / "ade20k_150" / sd.MARKER_NAME).exists()
    # ... and a checksum computed from the fixture list accepts it
    own = _canonical_sha256(fs.vocabularies["ade150.json"])
    monkeypatch.setitem(V.VOCABULARIES, "ade20k_150",
                        (dataclasses.replace(download, names_sha256=own), count))
    P.prepare(["ade20k_150"], tmp_path, download=False, **QUIET)
    classes = json.loads((tmp_path / "ade20k_150" / "classes.json").read_text())
    assert classes["eval_class_names"] == fs.vocabularies["ade150.json"]
    assert classes["sources"]["eval_class_names_match_pinned"] is True


def test_a_layout_1_preparation_is_upgraded_by_running_the_command_again(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path)
    P.prepare(["voc20b"], tmp_path, download=False, verify_checksums=False, **QUIET)
    directory = tmp_path / "voc20b"
    label = next((directory / "labels" / "val").iterdir())
    stamp = label.stat().st_mtime_ns
    # what layout 1 left: another vocabulary and the old version number
    classes = json.loads((directory / "classes.json").read_text())
    stale = classes | {"eval_class_names": ["stale"] * 59}
    (directory / "classes.json").write_text(json.dumps(stale))
    marker = json.loads((directory / sd.MARKER_NAME).read_text())
    (directory / sd.MARKER_NAME).write_text(json.dumps(marker | {"layout_version": 1}))
    with pytest.raises(sd.DatasetNotPreparedError, match="layout version 1"):
        sd.SegmentationBenchmark("voc20b", root=tmp_path)
    P.prepare(["voc20b"], tmp_path, download=False, verify_checksums=False, **QUIET)
    ds = sd.SegmentationBenchmark("voc20b", root=tmp_path)
    assert list(ds.eval_class_names) == fs.vocabularies["voc20b.json"]
    assert label.stat().st_mtime_ns == stamp  # the converted labels were reused


def test_ade847_shrinks_images_whose_short_side_exceeds_512(prepared):
    root, fs = prepared
    for stem, size in fs.image_sizes["ade20k_847"].items():
        with Image.open(root / "ade20k_847" / "images" / "val" / f"{stem}.jpg") as im:
            assert (im.height, im.width) == size
    assert resize_shape(520, 600) == (512, 591) and resize_shape(600, 520) == (591, 512)
    assert resize_shape(512, 900) is None and resize_shape(300, 200) is None


def test_ade847_seg_encoding_and_nearest_resize():
    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, :, 0] = [9, 13, 255]   # R // 10 = 0, 1, 25
    rgb[0, :, 1] = [5, 5, 255]
    assert decode_seg(rgb).tolist() == [[5, 261, 25 * 256 + 255]]
    label = np.arange(6).reshape(1, 6)
    # OpenCV INTER_NEAREST: source index floor(i * 6 / 4) = 0, 1, 3, 4
    assert resize_nearest(label, (1, 4)).tolist() == [[0, 1, 3, 4]]


def test_the_847_class_list_is_parsed_as_data_and_checked(tmp_path, sources):
    folder, _ = sources
    cats = read_847_categories(folder / "maskformer_prepare_ade20k_full_sem_seg.py")
    assert [c["trainId"] for c in cats] == list(range(847))
    bad = tmp_path / "bad.py"
    bad.write_text("ADE20K_SEM_SEG_FULL_CATEGORIES = [{'name': 'a', 'id': 1, 'trainId': 0}]\n")
    with pytest.raises(DataPreparationError, match="expected 847 categories"):
        read_847_categories(bad)
    bad.write_text("ADE20K_SEM_SEG_FULL_CATEGORIES = make_list()\n")
    with pytest.raises(DataPreparationError, match="not a literal"):
        read_847_categories(bad)


def test_rle_worked_examples_and_round_trip():
    # counts [0, 4]: no zeros, then four ones -> "04"; from the 4th count on the difference to the count
    # two back is stored: [1, 10, 2, 3] -> "1", ":" (10 + 48), "2", then 3 - 10 = -7 -> 25 + 48 = "I"
    assert rle_string_from_counts([0, 4]) == "04"
    assert rle_string_from_counts([1, 10, 2, 3]) == "1:2I"
    assert rle_counts_from_string("1:2I") == [1, 10, 2, 3]
    mask = rle_decode({"size": [2, 2], "counts": "04"})
    assert mask.all() and mask.shape == (2, 2)
    # runs go down the columns: 1 zero, then 2 ones fill (1, 0) and (0, 1)
    assert rle_decode({"size": [2, 2], "counts": [1, 2, 1]}).tolist() == [[False, True], [True, False]]
    with pytest.raises(DataPreparationError, match="sum to"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_rle_encode_decode_round_trip(h, w, seed):
    mask = np.random.default_rng(seed).random((h, w)) < 0.4
    assert np.array_equal(rle_decode(rle_encode(mask)), mask)


def test_pc459_rejects_unlabelled_pixels():
    assert convert_459(np.array([[1, 459]])).tolist() == [[0, 458]]
    with pytest.raises(DataPreparationError, match="1..459"):
        convert_459(np.array([[0, 3]]))


# ----------------------------------------------------------------------------
# the command line, dry run, markers
# ----------------------------------------------------------------------------
def test_dry_run_lists_missing_files_and_manual_steps_without_writing(tmp_path):
    lines = []
    root = tmp_path / "empty"
    missing = P.dry_run(["ade20k_847", "voc20", "voc20b"], root, log=lines.append)
    text = "\n".join(lines)
    # the ADE20K zip, the 847-class list, ade847.json, the VOC tar, SegmentationClassAug,
    # voc20.json and voc20b.json (shared files once)
    assert missing == 7
    assert "MANUAL STEP" in text and "ADE20K_2021_17_01.zip" in text and "request_data" in text
    assert "(also needed above)" in text
    assert not root.exists()
    assert P.main(["--datasets", "voc20", "--root", str(root), "--dry-run"]) == 1


def test_dry_run_of_prepared_benchmarks(prepared):
    root, _ = prepared
    lines = []
    assert P.dry_run(["all"], root, log=lines.append) == 0
    assert sum("prepared (" in line for line in lines) == len(ALL)
    assert P.main(["--datasets", "all", "--root", str(root), "--dry-run", "--quiet"]) == 0


def test_bad_arguments_are_rejected(tmp_path, capsys):
    assert P.main(["--datasets", "ade20k_151", "--root", str(tmp_path)]) == 2
    assert "datasets must be among" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        P.prepare(["voc20"], tmp_path, workers=0, **QUIET)


def test_interrupted_preparation_leaves_no_marker_and_the_loader_says_what_to_run(sources, tmp_path, monkeypatch):
    import data_scripts.voc as voc

    _, fs = sources
    _install(fs, tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(voc, "read_voc_class_names", crash)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(["voc20"], tmp_path, download=False, verify_checksums=False, **QUIET)
    assert any((tmp_path / "voc20" / "labels" / "val").iterdir())  # labels were written ...
    assert not (tmp_path / "voc20" / sd.MARKER_NAME).exists()    # ... but the run did not finish
    with pytest.raises(sd.DatasetNotPreparedError) as err:
        sd.SegmentationBenchmark("voc20", root=tmp_path)
    assert f"python -m data_scripts.prepare --datasets voc20 --root {tmp_path}" in str(err.value)
    monkeypatch.undo()
    logs = []
    P.prepare(["voc20"], tmp_path, download=False, verify_checksums=False, progress=False, log=logs.append)
    assert len(sd.SegmentationBenchmark("voc20", root=tmp_path)) == len(fs.expected["voc20"])
    P.prepare(["voc20"], tmp_path, download=False, verify_checksums=False, progress=False, log=logs.append)
    assert "already prepared" in logs[-1]


def test_a_failing_benchmark_does_not_stop_the_others(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path)
    (tmp_path / "downloads" / "ADE20K_2021_17_01.zip").unlink()  # the manual download is missing
    with pytest.raises(DataPreparationError) as err:
        P.prepare(["ade20k_847", "ade20k_150"], tmp_path, download=False, verify_checksums=False,
                  **QUIET)
    assert "1 of 2 benchmark(s) not prepared" in str(err.value) and "request_data" in str(err.value)
    assert sd.check_prepared("ade20k_150", root=tmp_path)["splits"] == {"val": 2}


def test_a_known_checksum_is_verified_for_files_already_downloaded(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path)
    with pytest.raises(DataPreparationError, match="6cd6e144f989b92b3379bac3b3de84fd.*Delete"):
        P.prepare(["voc20"], tmp_path, download=False, **QUIET)


def test_voc20b_vocabulary_must_start_with_the_voc_classes(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path)
    vocab = json.loads((tmp_path / "downloads" / "voc20b.json").read_text())
    (tmp_path / "downloads" / "voc20b.json").write_text(json.dumps(vocab[1:] + vocab[:1]))
    with pytest.raises(DataPreparationError, match="59 names starting with the 20 VOC classes"):
        P.prepare(["voc20b"], tmp_path, download=False, verify_checksums=False, **QUIET)


# ----------------------------------------------------------------------------
# downloads over HTTP (a server on 127.0.0.1, shut down after each test)
# ----------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = srv.files.get(self.path.lstrip("/"))
        if path is None:
            self.send_error(404)
            return
        data = Path(path).read_bytes()
        start, header = 0, self.headers.get("Range")
        if header and srv.honour_range:
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cuts_left > 0:  # send part of the body, then drop the connection
            srv.cuts_left -= 1
            self.wfile.write(body[: srv.cut_after])
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.honour_range, srv.cuts_left, srv.cut_after = {}, [], True, 0, 0
    srv.timeout = 5
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _payload(tmp_path, n=300_000):
    data = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    src, md5, sha256 = _payload(tmp_path)
    server.files["payload.bin"] = src
    server.cuts_left, server.cut_after = 1, 120_000
    dest = tmp_path / "out" / "payload.bin"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch(f"{server.url}/payload.bin", dest, md5=md5, progress=False, timeout=5)
    part = dest.with_name("payload.bin.part")
    assert not dest.exists() and part.stat().st_size == 120_000
    fetch(f"{server.url}/payload.bin", dest, md5=md5, sha256=sha256, progress=False, timeout=5)
    assert dest.read_bytes() == src.read_bytes() and not part.exists()
    assert server.requests == [("/payload.bin", None), ("/payload.bin", "bytes=120000-")]


def test_a_server_that_ignores_the_range_restarts_the_download(server, tmp_path):
    src, md5, _ = _payload(tmp_path)
    server.files["payload.bin"], server.honour_range = src, False
    dest = tmp_path / "payload.out"
    dest.with_name("payload.out.part").write_bytes(b"stale bytes from another file")
    fetch(f"{server.url}/payload.bin", dest, md5=md5, progress=False, timeout=5)
    assert dest.read_bytes() == src.read_bytes()


def test_a_checksum_mismatch_deletes_the_download(server, tmp_path):
    src, _, _ = _payload(tmp_path)
    server.files["payload.bin"] = src
    dest = tmp_path / "payload.out"
    with pytest.raises(DownloadError, match="expected 0+.*deleted"):
        fetch(f"{server.url}/payload.bin", dest, md5="0" * 32, progress=False, timeout=5)
    assert not dest.exists() and not dest.with_name("payload.out.part").exists()


def test_the_next_mirror_is_tried_when_one_fails(server, tmp_path):
    src, md5, _ = _payload(tmp_path, 1000)
    server.files["payload.bin"] = src
    dest = fetch_any([f"{server.url}/missing.bin", f"{server.url}/payload.bin"], tmp_path / "p", md5=md5,
                     progress=False, timeout=5)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(DownloadError, match="every source failed"):
        fetch_any([f"{server.url}/nope"], tmp_path / "q", progress=False, timeout=5)


def test_prepare_downloads_through_a_mirror(server, sources, tmp_path):
    folder, fs = sources
    for name in ("ADEChallengeData2016.zip", "ade150.json"):
        server.files[name] = fs.files[name]
    server.cuts_left, server.cut_after = 1, 1000  # the first attempt is cut short
    options = dict(mirror=server.url, verify_checksums=False, **QUIET)  # synthetic vocabulary
    with pytest.raises(DataPreparationError, match="resume"):
        P.prepare(["ade20k_150"], tmp_path, **options)
    P.prepare(["ade20k_150"], tmp_path, **options)
    assert sd.check_prepared("ade20k_150", root=tmp_path)["splits"] == {"val": 2}
    resumed, vocabulary = server.requests[-2:]
    assert resumed == ("/ADEChallengeData2016.zip", "bytes=1000-")
    assert vocabulary == ("/ade150.json", None)


# ----------------------------------------------------------------------------
# archives
# ----------------------------------------------------------------------------
def _members():
    return {f"top/file{i}.bin": os.urandom(3000) for i in range(3)}


def _write_tar(path, members, mode="w"):
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_complete_archives_extract_once(tmp_path):
    members = _members()
    for name, mode in (("a.tar", "w"), ("a.tar.gz", "w:gz")):
        _write_tar(tmp_path / name, members, mode)
        dest = tmp_path / f"out-{name}"
        assert extract(tmp_path / name, dest) == 3
        assert {p.name: p.read_bytes() for p in (dest / "top").iterdir()} == {
            Path(k).name: v for k, v in members.items()
        }
        assert extraction_marker(tmp_path / name, dest).is_file() and extract(tmp_path / name, dest) == 0


@pytest.mark.parametrize("kind", ["zip", "tar-member-boundary", "tar-mid-member", "tar.gz"])
def test_a_truncated_archive_gives_a_clear_error_and_extracts_nothing(tmp_path, kind):
    members = _members()
    if kind == "zip":
        path = tmp_path / "a.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        cut = path.stat().st_size - 200
    elif kind == "tar.gz":
        path = tmp_path / "a.tar.gz"
        _write_tar(path, members, "w:gz")
        cut = path.stat().st_size // 2
    else:
        path = tmp_path / "a.tar"
        _write_tar(path, members)
        # each member is a 512-byte header plus 3000 bytes padded to 3072
        cut = 2 * (512 + 3072) if kind == "tar-member-boundary" else 512 + 1000
    path.write_bytes(path.read_bytes()[:cut])
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match="truncated or corrupt.*Delete it"):
        extract(path, dest)
    assert not extraction_marker(path, dest).exists() and not (dest / "top").exists()


def test_a_corrupted_zip_member_fails_its_crc(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("top/x.bin", b"\x00" * 5000)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the stored member data
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        extract(path, tmp_path / "out")


def test_unsafe_member_paths_are_refused(tmp_path):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(ArchiveError, match="unsafe member path"):
        extract(path, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_prepare_reports_a_truncated_download(sources, tmp_path):
    _, fs = sources
    _install(fs, tmp_path)
    archive = tmp_path / "downloads" / "ADEChallengeData2016.zip"
    archive.write_bytes(archive.read_bytes()[:-300])
    with pytest.raises(DataPreparationError, match="ADEChallengeData2016.zip is truncated or corrupt"):
        P.prepare(["ade20k_150"], tmp_path, download=False, **QUIET)
    assert not (tmp_path / "ade20k_150" / sd.MARKER_NAME).exists()
