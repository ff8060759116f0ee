r"""Which CLIP a run uses and where its weights come from: :func:`~hyro_edu.clip.weights.load_clip` by name and tag.

Models are chosen by **name and pretrained tag** (:func:`~hyro_edu.clip.weights.load_clip`).  The
GPU default is ``ViT-B-16`` with ``openai`` weights, fetched by open_clip's
own mechanism into ``hyro_edu.core.paths.cache_dir() / "open_clip"``
(``$HYRO_EDU_CACHE``); when they cannot be had, :class:`~hyro_edu.clip.weights.WeightsUnavailableError`
names the tag and says how to provide the file.  On a CPU the book runs
``hyro-tiny`` (:data:`~hyro_edu.clip.tiny.TINY_CLIP_NAME`): open_clip's own ``open_clip.CLIP``
class with a small configuration, pretrained on the toy world by
:mod:`hyro_edu.clip.pretraining` (tag ``"toyworld"``).  :func:`select_mode`
says which of the two a notebook runs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import open_clip
import torch
from open_clip.pretrained import download_pretrained, get_pretrained_cfg

from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.clip.tiny import TINY_CLIP_NAME, TINY_PRETRAINED, build_tiny_clip
from hyro_edu.core import paths
from hyro_edu.core.images import CLIP_MEAN, CLIP_STD

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "WeightsUnavailableError",
    "RunMode",
    "select_mode",
    "describe_mode",
    "load_clip",
    "open_clip_cache_dir",
    "find_cached_weights",
]

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"
_log = logging.getLogger(__name__)


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained CLIP weights were asked for and could not be found or fetched."""


# ----------------------------------------------------------------------------
# which mode a notebook runs in
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunMode:
    """What a notebook runs: ``"cpu-small"`` (tiny CLIP, toy world) or ``"gpu-full"`` (ViT-B/16).

    ``model_name`` and ``pretrained`` are the arguments for :func:`~hyro_edu.clip.weights.load_clip`;
    ``reason`` says why this mode was chosen.
    """

    name: str
    model_name: str
    pretrained: str
    device: str
    reason: str

    @property
    def full(self) -> bool:
        return self.name == "gpu-full"

    def __str__(self) -> str:
        if self.full:
            return f"gpu-full: {self.model_name} {self.pretrained} weights on {self.device}"
        return f"cpu-small: tiny CLIP on the toy world ({self.device}; {self.reason})"


def _flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def _downloads_allowed() -> bool:
    return not (_flag("HYRO_EDU_OFFLINE") or _flag("HF_HUB_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def select_mode(
    model_name: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED
) -> RunMode:
    """Choose ``"gpu-full"`` (``model_name``/``pretrained`` on CUDA) or ``"cpu-small"``.

    ``$HYRO_EDU_MODE`` (``cpu-small`` or ``gpu-full``) decides when set.  Otherwise
    gpu-full needs a CUDA device and the weights: cached under
    :func:`open_clip_cache_dir`, or downloadable (downloads allowed and
    huggingface.co reachable).  No download happens here.
    """
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    forced = os.environ.get("HYRO_EDU_MODE", "").strip()
    if forced:
        if forced not in ("cpu-small", "gpu-full"):
            raise ValueError(f"HYRO_EDU_MODE must be 'cpu-small' or 'gpu-full', got {forced!r}")
        if forced == "gpu-full":
            return RunMode("gpu-full", model_name, pretrained, device, "HYRO_EDU_MODE=gpu-full")
        return RunMode("cpu-small", TINY_CLIP_NAME, TINY_PRETRAINED, device, "HYRO_EDU_MODE=cpu-small")
    if not cuda:
        reason = f"no GPU, so {model_name} {pretrained} cells are skipped"
    elif find_cached_weights(model_name, pretrained) is not None:
        return RunMode("gpu-full", model_name, pretrained, device, "GPU and cached weights")
    elif _downloads_allowed() and _hub_reachable():
        return RunMode("gpu-full", model_name, pretrained, device, "GPU; weights will be downloaded")
    else:
        reason = f"GPU but no {model_name} {pretrained} weights (none cached, no download possible)"
    return RunMode("cpu-small", TINY_CLIP_NAME, TINY_PRETRAINED, device, reason)


def describe_mode() -> str:
    """One line saying which mode this run is in, e.g. ``"cpu-small: tiny CLIP on the toy world ..."``."""
    return str(select_mode())


# ----------------------------------------------------------------------------
# building and loading
# ----------------------------------------------------------------------------
def open_clip_cache_dir() -> Path:
    """Where open_clip keeps downloaded weights: ``hyro_edu.core.paths.cache_dir() / "open_clip"``."""
    return paths.cache_dir() / "open_clip"


def _tag_cfg(model_name: str, pretrained: str) -> dict:
    cfg = get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"pretrained must be None, a path to a weights file or one of the tags {tags} for "
            f"{model_name!r}, got {pretrained!r}"
        )
    return cfg


def find_cached_weights(
    model_name: str, pretrained: str, cache_dir: Optional[Union[str, Path]] = None
) -> Optional[Path]:
    """The locally cached weights file of an open_clip tag, or ``None``; never downloads.

    Looks where open_clip's own download puts it: the Hugging Face hub cache
    under ``cache_dir`` (safetensors first), then ``cache_dir / basename(url)``.
    """
    cfg = get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        return None
    if cfg.get("file"):
        return Path(cfg["file"]) if Path(cfg["file"]).is_file() else None
    cache_dir = Path(cache_dir) if cache_dir is not None else open_clip_cache_dir()
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, filename = os.path.split(hub)
            names = [filename] if filename else []
            if not filename or filename == open_clip.constants.HF_WEIGHTS_NAME:
                names = [open_clip.constants.HF_SAFE_WEIGHTS_NAME, open_clip.constants.HF_WEIGHTS_NAME]
            elif filename.endswith((".bin", ".pth")):
                names = [filename[:-4] + ".safetensors", filename]
            for name in names:
                found = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir))
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
    url = cfg.get("url", "")
    if url:
        target = cache_dir / os.path.basename(url)
        if target.is_file():
            return target
    return None


def _unavailable(model_name: str, pretrained: str, cause: str, cache_dir: Path) -> WeightsUnavailableError:
    cfg = get_pretrained_cfg(model_name, pretrained) or {}
    source = cfg.get("hf_hub") or cfg.get("url") or "(no source known)"
    return WeightsUnavailableError(
        f"CLIP weights {pretrained!r} for model {model_name!r} are not available: {cause}. "
        f"To provide them: (a) on a machine with internet run "
        f"`python -c \"import open_clip; open_clip.create_model('{model_name}', "
        f"pretrained='{pretrained}', cache_dir='{cache_dir}')\"` and copy that folder to the same "
        f"place here (it is $HYRO_EDU_CACHE/open_clip); or (b) download the weights file from "
        f"{source} yourself and pass its path: load_clip('{model_name}', pretrained='/path/to/file')."
    )


@contextlib.contextmanager
def _quiet_root_warnings():
    # open_clip.create_model logs "initialized randomly" at WARNING on the root logger
    # before we load the weights ourselves; silence exactly that call.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)



def load_clip(
    model_name: str = DEFAULT_MODEL,
    pretrained: Optional[str] = DEFAULT_PRETRAINED,
    *,
    device: Optional[Union[str, torch.device]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    allow_download: Optional[bool] = None,
) -> "ClipBackbone":
    """Build a :class:`~hyro_edu.clip.backbone.ClipBackbone` for an open_clip model name and pretrained tag.

    Parameters
    ----------
    model_name : an open_clip ViT architecture (``open_clip.list_models()``, e.g.
        ``"ViT-B-16"``) or :data:`~hyro_edu.clip.tiny.TINY_CLIP_NAME` (``"hyro-tiny"``).
    pretrained : ``None`` (random initialisation), a tag known to open_clip for
        ``model_name`` (e.g. ``"openai"``), a path to a weights file, or for the
        tiny model ``"toyworld"`` (the cached toy-world pretraining; trained on
        first use, see :func:`hyro_edu.clip.pretraining.pretrained_tiny_clip`).
    device : where the model goes (default: CUDA if available, else CPU).
    cache_dir : open_clip's download cache (default :func:`open_clip_cache_dir`).
    allow_download : whether open_clip may download a missing tag (default: yes,
        unless ``$HYRO_EDU_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set).

    Raises
    ------
    ValueError : unknown model name or tag.
    WeightsUnavailableError : the weights are neither cached nor downloadable;
        the message names the tag and how to provide the file.

    The model is returned in eval mode.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cache_dir = Path(cache_dir) if cache_dir is not None else open_clip_cache_dir()
    if allow_download is None:
        allow_download = _downloads_allowed()
    mean, std = CLIP_MEAN, CLIP_STD
    if model_name == TINY_CLIP_NAME:
        if pretrained == TINY_PRETRAINED:
            from hyro_edu.clip.pretraining import pretrained_tiny_clip  # lazy: it imports Lightning

            return pretrained_tiny_clip(device=device)
        model = build_tiny_clip()
        path = None
        if pretrained is not None:
            path = Path(pretrained)
            if not path.is_file():
                raise WeightsUnavailableError(
                    f"pretrained for {TINY_CLIP_NAME!r} must be None, {TINY_PRETRAINED!r} or a path to "
                    f"a weights file; no file at {str(path)!r}"
                )
    else:
        if model_name not in open_clip.list_models():
            raise ValueError(
                f"model_name must be {TINY_CLIP_NAME!r} or an open_clip model "
                f"(open_clip.list_models(), e.g. 'ViT-B-16'), got {model_name!r}"
            )
        path, quick_gelu = None, False
        if pretrained is not None and Path(pretrained).is_file():
            path = Path(pretrained)
            quick_gelu = "openai" in Path(pretrained).name.lower()
        elif pretrained is not None:
            if os.sep in str(pretrained) or str(pretrained).endswith((".pt", ".bin", ".safetensors")):
                raise WeightsUnavailableError(
                    f"pretrained looks like a file path but there is no file at {str(pretrained)!r} "
                    f"(model {model_name!r})"
                )
            cfg = _tag_cfg(model_name, pretrained)
            quick_gelu = bool(cfg.get("quick_gelu", False))
            mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
            path = find_cached_weights(model_name, pretrained, cache_dir)
            if path is None:
                if not allow_download:
                    raise _unavailable(
                        model_name, pretrained,
                        f"no cached copy under {cache_dir} and downloads are switched off", cache_dir,
                    )
                try:
                    cache_dir.mkdir(parents=True, exist_ok=True)
                    path = Path(download_pretrained(cfg, cache_dir=str(cache_dir)))
                except Exception as err:  # network, hub or disk: report it with the remedy
                    raise _unavailable(
                        model_name, pretrained, f"the download failed ({type(err).__name__}: {err})",
                        cache_dir,
                    ) from err
        with _quiet_root_warnings():
            model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    if path is not None:
        open_clip.load_checkpoint(model, str(path))
    tag = None if pretrained is None else str(pretrained)
    return ClipBackbone(model, name=model_name, pretrained=tag, mean=mean, std=std).to(device).eval()
