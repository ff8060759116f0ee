"""Training data of the segmenter: a resumable stream, toy-world scenes, and COCO-Stuff crops
augmented as detectron2 augments them for CAT-Seg.

The stream depends only on ``(seed, position)`` (:class:`~hyro_edu.training.stream.ResumableSampler`),
so a run resumed at step ``k`` draws exactly the batches the uninterrupted run draws from step
``k`` on.  COCO-Stuff
(:class:`CocoStuffTrainData`): shortest edge 384 (:func:`resize_for_training`), a random crop of
at most 384², detectron2's ``ColorAugSSDTransform`` (:class:`ColorAugSSD`), a horizontal flip and
padding to 384² (pixel 128, label 255).  References: CAT-Seg :cite:`cho2024catseg`; detectron2
(``ColorAugSSDTransform``, ``ResizeShortestEdge``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hyro_edu.core.images import CLIP_MEAN, CLIP_STD
from hyro_edu.data.toyworld import BACKGROUND, ToyPixelDataset, ToyTransform, ToyWorld
from hyro_edu.segmentation.train.config import COLOR_AUGS, TRAIN_RESIZES
from hyro_edu.training.stream import ResumableSampler

__all__ = [
    "ResumableSampler",
    "ToySegmentationData",
    "shortest_edge_size",
    "resize_for_training",
    "rgb_to_hsv_opencv",
    "hsv_to_rgb_opencv",
    "ColorAugSSD",
    "CocoStuffTrainData",
]


class ToySegmentationData(Dataset):
    """Toy-world scenes of the seen classes, labels mapped to the training vocabulary.

    Item ``(index, position)`` (from :class:`hyro_edu.training.stream.ResumableSampler`) is training scene ``position``:
    every step draws new scenes, and scene ``p`` depends only on ``(world.seed, p)``.
    ``dict(image=(3, S, S) normalised, label=(S, S) int64)`` with labels ``0..len(seen)-1`` for the
    seen classes and 255 (ignored) where no object is.  ``vocabulary`` holds the seen class names.
    """

    #: the stream's length: endless in practice; the sampler decides what is read
    STREAM = 2**62

    def __init__(self, world: ToyWorld, *, image_size: int, num_objects=(1, 3), mean=None, std=None):
        kwargs = {} if mean is None else dict(mean=mean, std=std)
        self.world = world
        self.scenes = ToyPixelDataset(world, self.STREAM, split="train", classes="seen",
                                      num_objects=tuple(num_objects),
                                      transform=ToyTransform(image_size, hflip=0.5, **kwargs))
        seen = world.seen_classes
        self.vocabulary = tuple(world.class_names[k] for k in seen)
        lut = torch.full((256,), BACKGROUND, dtype=torch.int64)  # no object: ignored, like unlabelled pixels
        lut[torch.tensor(seen)] = torch.arange(len(seen))
        self._lut = lut

    def __len__(self) -> int:
        return self.STREAM

    def __getitem__(self, item) -> dict:
        _, position = item if isinstance(item, tuple) else (item, item)
        sample = self.scenes[position]
        return {"image": sample["image"], "label": self._lut[sample["mask"].long()]}


# COCO-Stuff augmentation, as detectron2 runs it for CAT-Seg
def shortest_edge_size(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """``(new_height, new_width)`` of detectron2's ``ResizeShortestEdge``: the shorter side becomes
    ``size`` unless the longer would exceed ``max_size`` (then the longer becomes ``max_size``);
    both rounded half up (``int(x + 0.5)``)."""
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_for_training(image: torch.Tensor, label: torch.Tensor, size: int = 384,
                        max_size: int = 1333, *, method: str = "pil"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a uint8 ``image (3, H, W)`` and its ``label (H, W)`` so the shorter side is ``size``.

    ``method="pil"`` (official): the image as detectron2's ``ResizeTransform`` resizes a uint8
    array, with PIL's bilinear filter (antialiased when shrinking, rounded to uint8); the label as
    it resizes CAT-Seg's label, which the mapper reads as float64:
    ``F.interpolate(mode="nearest")``, i.e. source index ``floor(i · H / H')`` -- *not* PIL's
    nearest, which samples pixel centres, ``floor((i + 0.5) · H / H')``.  Returns
    ``(uint8 image, int64 label)`` at :func:`shortest_edge_size`.

    ``method="torch"`` (the earlier stand-in): a float bilinear ``F.interpolate`` without
    antialiasing and without rounding, the size rounded with Python's ``round``; returns a float
    image.
    """
    if method not in TRAIN_RESIZES:
        raise ValueError(f"method must be one of {TRAIN_RESIZES}, got {method!r}")
    h, w = label.shape
    if method == "torch":
        scale = min(size / min(h, w), max_size / max(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        out = F.interpolate(image.float()[None], size=(nh, nw), mode="bilinear",
                            align_corners=False)[0]
        lab = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        return out, lab
    from PIL import Image  # a dependency of matplotlib and of hyro_edu.data.benchmarks

    if image.dtype != torch.uint8:
        raise ValueError(
            f"image must be a uint8 tensor (3, H, W) for method='pil', got {image.dtype}"
        )
    nh, nw = shortest_edge_size(h, w, size, max_size)
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    pil = pil.resize((nw, nh), Image.BILINEAR)
    out = torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()
    lab = F.interpolate(label[None, None].double(), size=(nh, nw), mode="nearest")[0, 0].long()
    return out, lab


def rgb_to_hsv_opencv(rgb: np.ndarray) -> np.ndarray:
    r"""OpenCV's ``cvtColor(RGB2HSV)`` on uint8 ``(..., 3)`` arrays, in OpenCV's 8-bit units.

    .. math::
        V = \max(R, G, B),\quad S = 255\,\frac{V - \min}{V},\quad
        H = \tfrac12\,\mathrm{hue}^\circ \in [0, 180),

    computed in OpenCV's fixed point (12 fractional bits, its ``sdiv``/``hdiv`` tables), so the
    integers are OpenCV's own.  Returns uint8 ``(..., 3)`` (H, S, V).
    """
    x = np.asarray(rgb)
    if x.dtype != np.uint8 or x.shape[-1] != 3:
        raise ValueError(f"rgb must be a uint8 array (..., 3), got {x.dtype} {x.shape}")
    r, g, b = (x[..., i].astype(np.int64) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    shift = 12
    # OpenCV's tables: round((255 << 12) / v) and round((180 << 12) / (6 diff)), 0 at 0
    sdiv = np.where(v > 0, np.floor((255 << shift) / np.maximum(v, 1) + 0.5), 0)
    hdiv = np.where(diff > 0, np.floor((180 << shift) / (6.0 * np.maximum(diff, 1)) + 0.5), 0)
    sdiv, hdiv = sdiv.astype(np.int64), hdiv.astype(np.int64)
    s = (diff * sdiv + (1 << (shift - 1))) >> shift
    num = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (num * hdiv + (1 << (shift - 1))) >> shift  # arithmetic shift: floor, as in C
    h = np.where(h < 0, h + 180, h)
    return np.stack([np.clip(h, 0, 255), s, v], axis=-1).astype(np.uint8)


def hsv_to_rgb_opencv(hsv: np.ndarray) -> np.ndarray:
    """OpenCV's ``cvtColor(HSV2RGB)`` on uint8 ``(..., 3)`` arrays (H in [0, 180), S and V in
    [0, 255]): float32 arithmetic with the sector table of :func:`rgb_to_hsv_opencv`'s inverse,
    then ``× 255`` and truncation to uint8, as OpenCV 4's vectorised loop does (its scalar loop,
    which handles the last few pixels of a call, rounds instead: a difference of at most 1 there).
    """
    x = np.asarray(hsv)
    if x.dtype != np.uint8 or x.shape[-1] != 3:
        raise ValueError(f"hsv must be a uint8 array (..., 3), got {x.dtype} {x.shape}")
    f32 = np.float32
    one = f32(1.0)
    h = x[..., 0].astype(f32) * (f32(6.0) / f32(180.0))
    s = x[..., 1].astype(f32) * (one / f32(255.0))
    v = x[..., 2].astype(f32) * (one / f32(255.0))
    pre = np.trunc(h)
    frac = h - pre
    sector = pre - f32(6.0) * np.trunc(pre * (one / f32(6.0)))
    tab = [v, v * (one - s), v * (one - s * frac), v * (one - s * (one - frac))]
    # which table entry each sector takes for R, G and B (OpenCV's sector_data, RGB order)
    order = {"r": (0, 2, 1, 1, 3, 0), "g": (3, 0, 0, 2, 1, 1), "b": (1, 1, 3, 0, 0, 2)}
    out = []
    for channel in ("r", "g", "b"):
        value = np.zeros_like(v)
        for k, entry in enumerate(order[channel]):
            value = np.where(sector == k, tab[entry], value)
        out.append(np.clip(np.trunc(value * f32(255.0)), 0, 255))
    return np.stack(out, axis=-1).astype(np.uint8)


class ColorAugSSD:
    """detectron2's ``ColorAugSSDTransform`` (the SSD photometric distortion) on uint8 RGB images.

    In this order, each step applied with probability 1/2 and saved as uint8 after it (values
    clipped to [0, 255] and truncated):

    1. brightness: add ``δ ~ U(-32, 32)`` to every channel;
    2. a fair coin chooses ``contrast, saturation, hue`` or ``saturation, hue, contrast``:

       * contrast: multiply every channel by ``α ~ U(0.5, 1.5)`` (no mean-centring);
       * saturation: in OpenCV's HSV (:func:`rgb_to_hsv_opencv`), multiply S by
         ``α ~ U(0.5, 1.5)``;
       * hue: in OpenCV's HSV, ``H ← (H + k) mod 180`` with an integer ``k`` uniform in
         ``[-18, 18]`` (OpenCV's 8-bit hue unit is 2°, so up to ±36°).

    :meth:`draw` returns the random choices as a plan (``None`` for a skipped step) and
    :meth:`apply` applies a plan, so a test can check the order and each step on its own.
    Reference: detectron2 ``projects/PointRend/point_rend/color_augmentation.py`` (which CAT-Seg's
    ``MaskFormerSemanticDatasetMapper`` uses with ``COLOR_AUG_SSD: True``); Liu et al., SSD (2016).
    """

    def __init__(self, brightness_delta: float = 32, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta = float(brightness_delta)
        self.contrast, self.saturation = tuple(contrast), tuple(saturation)
        self.hue_delta = int(hue_delta)

    def draw(self, rng: np.random.Generator) -> dict:
        """One random plan: ``brightness`` (δ or None), ``contrast_first`` (bool), ``contrast``,
        ``saturation`` (α or None), ``hue`` (k or None)."""
        plan = {"brightness": float(rng.uniform(-self.brightness_delta, self.brightness_delta))
                if rng.integers(2) else None}
        plan["contrast_first"] = bool(rng.integers(2))
        plan["contrast"] = float(rng.uniform(*self.contrast)) if rng.integers(2) else None
        plan["saturation"] = float(rng.uniform(*self.saturation)) if rng.integers(2) else None
        hue = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
        plan["hue"] = hue if rng.integers(2) else None
        return plan

    @staticmethod
    def _affine(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        # detectron2's convert(): float32 arithmetic, clip, then a truncating cast to uint8
        y = x.astype(np.float32) * np.float32(alpha) + np.float32(beta)
        return np.clip(y, 0, 255).astype(np.uint8)

    def brightness(self, img: np.ndarray, delta: float) -> np.ndarray:
        return self._affine(img, beta=delta)

    def contrast_(self, img: np.ndarray, alpha: float) -> np.ndarray:
        return self._affine(img, alpha=alpha)

    def saturation_(self, img: np.ndarray, alpha: float) -> np.ndarray:
        hsv = rgb_to_hsv_opencv(img)
        hsv[..., 1] = self._affine(hsv[..., 1], alpha=alpha)
        return hsv_to_rgb_opencv(hsv)

    def hue_(self, img: np.ndarray, shift: int) -> np.ndarray:
        hsv = rgb_to_hsv_opencv(img)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
        return hsv_to_rgb_opencv(hsv)

    def apply(self, img: np.ndarray, plan: dict) -> np.ndarray:
        """``img`` uint8 ``(H, W, 3)`` RGB after the steps of ``plan`` (see :meth:`draw`)."""
        if plan["brightness"] is not None:
            img = self.brightness(img, plan["brightness"])
        steps = [("contrast", self.contrast_), ("saturation", self.saturation_),
                 ("hue", self.hue_)]
        if not plan["contrast_first"]:
            steps = steps[1:] + steps[:1]
        for key, op in steps:
            if plan[key] is not None:
                img = op(img, plan[key])
        return img

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(img, self.draw(rng))


class CocoStuffTrainData(Dataset):
    """COCO-Stuff-171 training crops with CAT-Seg's augmentation (its
    ``MaskFormerSemanticDatasetMapper``).

    Official (``color_aug="ssd"``, ``resize="pil"``), in detectron2's order: shortest edge to
    ``size`` with the longest at most 1333 (:func:`resize_for_training`), a random crop of
    ``min(size, H) × min(size, W)``, :class:`ColorAugSSD`, a horizontal flip with probability 1/2,
    and padding at the bottom and right to ``size × size`` (pixel 128, label 255).
    ``color_aug="none"`` skips the colour step.  ``color_aug="legacy"`` is the earlier stand-in:
    pad first, then crop, an always-on jitter (brightness ±32, mean-centred contrast and a
    grey-blend saturation in ×[0.5, 1.5], no hue) on float pixels, then the flip; with
    ``resize="torch"`` it reproduces the earlier data exactly.  Every random choice is drawn from
    ``(seed, position)``.  Images come out normalised with ``mean``/``std`` (0-1 scale).
    ``dataset`` replaces the prepared COCO-Stuff train split (anything with uint8 ``image``
    samples, ``label``, ``ignore_index`` and ``prompt_names``; the tests use small ones).
    """

    def __init__(self, size: int = 384, *, root=None, seed: int = 0, mean=None, std=None,
                 color_aug: str = "ssd", resize: str = "pil", max_size: int = 1333, dataset=None):
        if color_aug not in COLOR_AUGS:
            raise ValueError(f"color_aug must be one of {COLOR_AUGS}, got {color_aug!r}")
        if resize not in TRAIN_RESIZES:
            raise ValueError(f"resize must be one of {TRAIN_RESIZES}, got {resize!r}")
        if dataset is None:
            from hyro_edu.data.benchmarks import SegmentationBenchmark  # only for the full recipe

            dataset = SegmentationBenchmark("coco_stuff", "train", root=root)
        self.data = dataset
        self.vocabulary = tuple(self.data.prompt_names)
        self.size, self.seed, self.max_size = int(size), int(seed), int(max_size)
        self.color_aug, self.resize = color_aug, resize
        self.ssd = ColorAugSSD()
        self.mean = torch.tensor(mean or CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(std or CLIP_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        return (image.float().clamp(0, 255) / 255.0 - self.mean) / self.std

    def __getitem__(self, item) -> dict:
        index, position = item if isinstance(item, tuple) else (item, item)
        sample = self.data[index]
        image, label = resize_for_training(sample["image"], sample["label"], self.size,
                                           self.max_size, method=self.resize)
        if self.color_aug == "legacy":
            return self._legacy(image, label, position)
        rng = np.random.default_rng([self.seed, 11, position])
        size, ignore = self.size, self.data.ignore_index
        h, w = label.shape
        ch, cw = min(size, h), min(size, w)
        top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        image = image[:, top: top + ch, left: left + cw]
        label = label[top: top + ch, left: left + cw]
        if self.color_aug == "ssd":
            if image.dtype != torch.uint8:  # resize="torch" gives float pixels: round them first
                image = image.round().clamp(0, 255).to(torch.uint8)
            hwc = self.ssd(image.permute(1, 2, 0).contiguous().numpy(), rng)
            image = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)
        if rng.random() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        ph, pw = size - ch, size - cw
        if ph or pw:  # detectron2 pads after the augmentation, at the bottom and the right
            image = F.pad(image.float(), (0, pw, 0, ph), value=128.0)
            label = F.pad(label, (0, pw, 0, ph), value=ignore)
        return {"image": self._normalise(image), "label": label.contiguous()}

    def _legacy(self, image: torch.Tensor, label: torch.Tensor, position: int) -> dict:
        """The earlier stand-in (kept for comparison): pad, crop, always-on jitter, flip."""
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, 11, position]).generate_state(1)[0]))
        image = image.float()
        nh, nw = label.shape
        ph, pw = max(0, self.size - nh), max(0, self.size - nw)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=128.0)
            label = F.pad(label, (0, pw, 0, ph), value=self.data.ignore_index)
        top = int(torch.randint(0, image.shape[1] - self.size + 1, (1,), generator=g))
        left = int(torch.randint(0, image.shape[2] - self.size + 1, (1,), generator=g))
        image = image[:, top: top + self.size, left: left + self.size]
        label = label[top: top + self.size, left: left + self.size]
        u = torch.rand(4, generator=g)
        image = image + (u[0] * 64 - 32)
        mean = image.mean()
        image = (image - mean) * (0.5 + u[1]) + mean
        grey = image.mean(0, keepdim=True)
        image = (image - grey) * (0.5 + u[2]) + grey
        if u[3] < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return {"image": self._normalise(image), "label": label}
