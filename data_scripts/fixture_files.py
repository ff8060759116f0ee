"""File encodings the fixture builders share: PNG and JPEG bytes, zip and tar archives.

:mod:`data_scripts.fixtures` and :mod:`data_scripts.hvsa_fixtures` write miniature raw datasets in
their real on-disk formats; these helpers turn arrays into image bytes and members into archives.
"""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["png_bytes", "jpeg_bytes", "write_zip", "write_tar"]


def png_bytes(array: np.ndarray, palette: bool = False) -> bytes:
    """``array`` (``(H, W)`` or ``(H, W, C)``) as PNG bytes; ``palette``: an indexed-colour PNG of
    ``uint8`` indices (SegmentationClassAug: the pixel values are palette indices)."""
    if palette:
        image = Image.frombytes("P", array.shape[::-1], np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        image.putpalette([(i * 37) % 256 for i in range(256 * 3)])
    else:
        image = Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(rng: np.random.Generator, height: int, width: int) -> bytes:
    """A random ``height`` x ``width`` RGB image drawn from ``rng``, as JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_zip(path: Path, members: dict) -> Path:
    """Write the zip archive ``path`` (deflated) of ``members`` (member name -> bytes or text); returns ``path``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def write_tar(path: Path, members: dict, mode: str = "w") -> Path:
    """Write the tar archive ``path`` of ``members`` (member name -> bytes); ``mode`` as for
    ``tarfile.open`` (``"w:gz"``: gzipped); returns ``path``."""
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
