"""Resumable, verified downloads.

:func:`fetch` downloads one URL into ``<dest>.part``, resuming an existing ``.part`` with an HTTP
``Range`` request (a server that ignores the range answers 200 and the download restarts from byte
0), shows a progress bar (tqdm when installed), checks the size announced by the server and the
MD5/SHA-256 checksum when one is known, and only then renames ``.part`` to ``dest`` (atomic on one
file system). A file named ``dest`` is therefore always complete; an interrupted download leaves a
``.part`` that the next call continues.

Name lists (CAT-Seg's ``datasets/*.json`` vocabularies) are checked by the SHA-256 of their
*canonical* content rather than of their bytes (:func:`names_digest`): the JSON list of strings
is parsed and serialised again as ``json.dumps(names, ensure_ascii=False, separators=(",", ":"))``
in UTF-8, so whitespace between the entries, indentation and a final newline do not matter, while
every character inside a name (a trailing space included) and the order of the names do. The
expected values were computed from the files' text as stored at the pinned commit.

:class:`Download` describes one file a preparation needs: where to fetch it (mirrors tried in
order), what it should hash to, or, for archives that need a registration, the manual steps and
the expected file name.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

__all__ = [
    "DataPreparationError",
    "DownloadError",
    "ManualStepRequired",
    "Download",
    "fetch",
    "fetch_any",
    "file_digest",
    "names_digest",
    "canonical_names",
    "verify",
    "probe_size",
    "human_size",
]

USER_AGENT = "hyro-edu-data-scripts/1 (+https://github.com/hyro-edu/hyro-edu)"
CHUNK = 1 << 20


class DataPreparationError(RuntimeError):
    """A preparation step failed; the message says what to do."""


class DownloadError(DataPreparationError):
    """A download failed, was interrupted, or did not match its size or checksum."""


class ManualStepRequired(DataPreparationError):
    """A file cannot be downloaded automatically; the message gives the steps and the file name."""


@dataclass(frozen=True)
class Download:
    """One file a preparation needs, in ``<root>/downloads/<filename>``.

    ``urls`` are tried in order (empty: manual download, see ``manual``). ``md5``/``sha256`` are
    checked when given; ``names_sha256`` marks a JSON list of names and is the SHA-256 of its
    canonical form (:func:`names_digest`). ``extract_to`` (relative to ``<root>/raw``) marks an
    archive to unpack there. ``satisfied_by`` lists paths relative to ``<root>`` whose existence
    makes the file unnecessary (for example an archive the user already unpacked by hand).
    ``size_note`` is a human-readable size with its source, shown by ``--dry-run``.
    """

    filename: str
    urls: tuple[str, ...] = ()
    md5: Optional[str] = None
    sha256: Optional[str] = None
    names_sha256: Optional[str] = None
    extract_to: Optional[str] = None
    satisfied_by: tuple[str, ...] = ()
    size_note: str = ""
    manual: str = ""
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def is_manual(self) -> bool:
        return not self.urls


def human_size(n: Optional[int]) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``None`` -> ``"unknown size"``."""
    if n is None:
        return "unknown size"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def file_digest(path, algorithm: str = "md5", *, chunk_size: int = CHUNK) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def canonical_names(names) -> str:
    """The canonical text of a name list: compact JSON, non-ASCII kept (module docstring)."""
    return json.dumps(list(names), ensure_ascii=False, separators=(",", ":"))


def names_digest(path) -> str:
    """SHA-256 (hex) of the canonical form of the JSON list of strings in ``path``.

    Raises :class:`DownloadError` if the file is not UTF-8 JSON holding a list of strings.
    """
    try:
        names = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DownloadError(f"{path} is not a readable UTF-8 JSON file ({exc})") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DownloadError(f"{path} must hold a JSON list of class names (strings)")
    return hashlib.sha256(canonical_names(names).encode("utf-8")).hexdigest()


def verify(
    path,
    *,
    md5: Optional[str] = None,
    sha256: Optional[str] = None,
    names_sha256: Optional[str] = None,
) -> None:
    """Raise :class:`DownloadError` unless ``path`` has the given checksums (those not None).

    ``md5`` and ``sha256`` are digests of the bytes; ``names_sha256`` is the digest of the
    canonical name list (:func:`names_digest`).
    """
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual.lower() != expected.lower():
                raise DownloadError(f"{path} has {algorithm} {actual}, expected {expected}")
    if names_sha256:
        actual = names_digest(path)
        if actual.lower() != names_sha256.lower():
            raise DownloadError(
                f"{path} lists other class names than expected: canonical sha256 {actual}, "
                f"expected {names_sha256}"
            )


class _Progress:
    """tqdm if available, else a line every 10 %; silent when disabled."""

    def __init__(self, enabled: bool, total: Optional[int], initial: int, desc: str):
        self.bar = None
        self.enabled, self.total, self.done, self.desc = enabled, total, initial, desc
        self._last_tenth = -1
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.total:
            tenth = 10 * self.done // self.total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                print(f"{self.desc}: {10 * tenth}% of {human_size(self.total)}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def fetch(
    url: str,
    dest,
    *,
    md5: Optional[str] = None,
    sha256: Optional[str] = None,
    names_sha256: Optional[str] = None,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = CHUNK,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part``; verify; rename. Returns ``dest``.

    Raises :class:`DownloadError` when the transfer stops early (the ``.part`` stays, so calling
    again resumes), when the server's size or the checksum does not match (the ``.part`` is deleted,
    so calling again starts over), or on HTTP errors. If ``dest`` exists it is only verified.
    """
    dest = Path(dest)
    sums = dict(md5=md5, sha256=sha256, names_sha256=names_sha256)
    if dest.exists():
        verify(dest, **sums)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            # The range starts at or past the end: the .part already holds the whole file.
            return _finish(part, dest, sums, None)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: {exc}") from None

    with response:
        total: Optional[int] = None
        mode = "wb"
        content_range = response.headers.get("Content-Range", "")
        length = response.headers.get("Content-Length")
        if start and response.status == 206:
            match = _CONTENT_RANGE.match(content_range)
            if not match or int(match.group(1)) != start:
                raise DownloadError(
                    f"{url}: the server answered range {content_range!r} to a request from byte {start}"
                )
            mode = "ab"
            total = int(match.group(3)) if match.group(3) != "*" else None
        else:
            start = 0  # no range requested, or the server ignored it (200): start over
            total = int(length) if length is not None else None
        bar = _Progress(progress, total, start, dest.name)
        written = start
        try:
            with open(part, mode) as f:
                while True:
                    block = response.read(chunk_size)
                    if not block:
                        break
                    f.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (OSError, socket.timeout, http.client.HTTPException) as exc:
            raise DownloadError(
                f"{url}: interrupted after {human_size(written)} ({exc!r}); run the same command again to resume "
                f"from {part}"
            ) from None
        finally:
            bar.close()
    if total is not None and written < total:
        raise DownloadError(
            f"{url}: interrupted after {human_size(written)} of {human_size(total)}; run the same command again "
            f"to resume from {part}"
        )
    return _finish(part, dest, sums, total)


def _finish(part: Path, dest: Path, sums: dict, total) -> Path:
    size = part.stat().st_size
    if total is not None and size != total:
        part.unlink()
        raise DownloadError(f"{dest.name}: got {size} bytes, the server announced {total}; deleted, run again")
    try:
        verify(part, **sums)
    except DownloadError as exc:
        part.unlink()
        raise DownloadError(f"{exc}; the download was deleted, run the same command again to fetch it anew") from None
    os.replace(part, dest)
    return dest


def probe_size(url: str, timeout: float = 20.0) -> Optional[int]:
    """The size the server announces for ``url`` (HEAD request), or None if it says nothing or fails."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            return int(length) if length is not None else None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None


def fetch_any(urls: Sequence[str], dest, **kwargs) -> Path:
    """:func:`fetch` from the first URL that works; :class:`DownloadError` listing every failure otherwise.

    An interruption (the ``.part`` grew) is raised at once, so that a rerun resumes from the same
    place instead of trying a mirror.
    """
    if not urls:
        raise ValueError("urls must name at least one URL")
    errors = []
    part = Path(str(dest) + ".part")
    for url in urls:
        before = part.stat().st_size if part.exists() else 0
        try:
            return fetch(url, dest, **kwargs)
        except DownloadError as exc:
            after = part.stat().st_size if part.exists() else 0
            if after > before:
                raise
            errors.append(str(exc))
    raise DownloadError("every source failed:\n  " + "\n  ".join(errors))
