"""Archive extraction that never leaves a half-unpacked tree looking complete.

:func:`extract` unpacks a ``.zip``, ``.tar``, ``.tar.gz`` or ``.tgz`` into a temporary folder next
to the destination, merges it into the destination only when every member was read, and then writes
``.extracted-<archive name>``; a later call with that marker present does nothing. A truncated or
corrupt archive raises :class:`ArchiveError` saying so: zip members are CRC-checked as they are
read, gzip streams must reach their end marker, and a tar must end with its two zero blocks (a
tar cut at a member boundary is otherwise indistinguishable from a shorter one). Members with
absolute paths or ``..``, links and device files are refused; macOS ``__MACOSX/`` metadata is
skipped.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .download import DataPreparationError

__all__ = ["ArchiveError", "extract", "extraction_marker", "is_extracted"]


class ArchiveError(DataPreparationError):
    """An archive is truncated, corrupt, of an unknown type, or contains unsafe members."""


def extraction_marker(archive, dest) -> Path:
    """The marker file that says ``archive`` was fully unpacked into ``dest``."""
    return Path(dest) / f".extracted-{Path(archive).name}"


def is_extracted(archive, dest) -> bool:
    return extraction_marker(archive, dest).is_file()


def _safe_name(name: str, archive: Path) -> PurePosixPath | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ArchiveError(f"{archive} contains the unsafe member path {name!r}; refusing to extract it")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or parts[0] == "__MACOSX":
        return None
    return PurePosixPath(*parts)


def _kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    raise ArchiveError(f"{archive}: unknown archive type (expected .zip, .tar, .tar.gz or .tgz)")


def _corrupt(archive: Path, exc: BaseException) -> ArchiveError:
    return ArchiveError(
        f"{archive} is truncated or corrupt ({type(exc).__name__}: {exc}). Delete it and run the same command "
        "again to download it anew (or copy a complete file there)."
    )


def _extract_zip(archive: Path, tmp: Path) -> int:
    count = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = _safe_name(info.filename, archive)
            if rel is None:
                continue
            target = tmp / rel
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            mode = info.external_attr >> 16
            if mode and (mode & 0o170000) == 0o120000:
                raise ArchiveError(f"{archive} contains the symbolic link {info.filename!r}; refusing to extract it")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:  # reading checks the CRC
                shutil.copyfileobj(src, dst, 1 << 20)
            count += 1
    return count


def _extract_tar(archive: Path, tmp: Path) -> int:
    count = 0
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            rel = _safe_name(member.name, archive)
            if rel is None:
                continue
            target = tmp / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise ArchiveError(f"{archive} contains {member.name!r}, which is not a regular file; refusing it")
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if target.stat().st_size != member.size:
                raise tarfile.ReadError(f"unexpected end of data in {member.name}")
            count += 1
        # tarfile stops silently at a header cut short; a complete archive ends with two zero blocks.
        tf.fileobj.seek(tf.offset)
        tail = tf.fileobj.read(2 * tarfile.BLOCKSIZE)
        if len(tail) < 2 * tarfile.BLOCKSIZE or tail.strip(b"\0"):
            raise tarfile.ReadError("the end-of-archive marker is missing")
    return count


def _merge(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``, merging folders that exist in both."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def extract(archive, dest) -> int:
    """Unpack ``archive`` into ``dest`` (created if needed); return the number of files unpacked.

    Does nothing and returns 0 if the extraction marker says it was done before.
    """
    archive, dest = Path(archive), Path(dest)
    if is_extracted(archive, dest):
        return 0
    if not archive.is_file():
        raise ArchiveError(f"{archive} does not exist")
    kind = _kind(archive)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".partial-{archive.name}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from an interrupted extraction
    tmp.mkdir()
    try:
        if kind == "zip":
            count = _extract_zip(archive, tmp)
        else:
            count = _extract_tar(archive, tmp)
    except ArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _corrupt(archive, exc) from None
    _merge(tmp, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    extraction_marker(archive, dest).write_text(f"{count} files\n", encoding="utf-8")
    return count
