r"""A procedural open-vocabulary world that a CLIP can learn on two CPU cores.

Every image shows one or more coloured shapes on a noisy grey background.  The
class names come from a three-level taxonomy,

.. code-block:: text

    object ─┬─ round ───┬─ circle ─────┬─ red circle, green circle, blue circle, ...
            │           ├─ ring        ...
            │           └─ semicircle
            ├─ polygon ─┬─ square, triangle, diamond
            └─ symbol ──┬─ cross, star, heart

3 families, 9 shapes and 9 × 6 = 54 coloured shapes (the leaf classes, the
"class names" of the world).  A fixed rule holds out two colours per shape,
``(shape index + colour index) % 3 == 0``: 18 unseen leaf classes for
open-vocabulary evaluation and 36 seen ones for training.  Every shape is seen
in four colours and every colour with six shapes, so an unseen name such as
"red circle" is a new *composition* of words seen in training: zero-shot
transfer to it is possible in principle, as it is for CLIP
(Radford et al., ICML 2021) on real data.  Neither word alone suffices among
the unseen names: each unseen colour goes with three unseen shapes and each
unseen shape with two unseen colours.

Shapes stay upright up to ±20° by default (``max_rotation``): a small ViT
trained for a few minutes learns upright shapes far faster than shapes at any
orientation.

For every image the generator returns the ``uint8`` image, a per-pixel class
map (``BACKGROUND`` where no object is), one visible-pixel mask per object,
the image-level labels and a caption ("a photo of a red circle and a blue
star").  Objects never overlap (they are at least 2 px apart), so every
object's mask is exactly the set of pixels it covers by half or more, and the
class map is the union of the object masks.  Scene ``i`` of a split depends only on ``(seed, split,
i)``: datasets are deterministic whatever the order or the number of workers.

:class:`ToyImageDataset` (image level: image, labels, caption) and
:class:`ToyPixelDataset` (pixel level: image, class map, labels) turn scenes
into normalised tensors through a :class:`ToyTransform` (resize, horizontal
flip, CLIP normalisation).

It stays one module (about 550 lines) because it is one concept: the datasets
are thin, deterministic views of the generator (scene ``i`` of a split, seeded
by ``(seed, split, i)``) that share its split table and :class:`Scene`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hyro_edu.core.images import CLIP_MEAN, CLIP_STD  # re-exported: the toy transform's defaults
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "FAMILIES",
    "COLOURS",
    "SHAPES",
    "BACKGROUND",
    "CLIP_MEAN",
    "CLIP_STD",
    "Scene",
    "ToyWorld",
    "ToyTransform",
    "ToyImageDataset",
    "ToyPixelDataset",
    "caption_for",
]

#: family -> shapes (the first two levels below the root).
FAMILIES: dict[str, tuple[str, ...]] = {
    "round": ("circle", "ring", "semicircle"),
    "polygon": ("square", "triangle", "diamond"),
    "symbol": ("cross", "star", "heart"),
}
#: the shapes, in class-index order.
SHAPES: tuple[str, ...] = tuple(s for shapes in FAMILIES.values() for s in shapes)
#: colour word -> nominal RGB (0-255); each object's colour is jittered around it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 210, 35),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
#: label of pixels that belong to no object in the per-pixel class map.
BACKGROUND = 255

_SPLITS = {"train": 0, "val": 1, "test": 2}
_TEMPLATES_1 = ("a photo of a {}.", "a {}.", "a picture of a {}.", "there is a {} in the scene.")
_TEMPLATES_N = ("a photo of {}.", "{}.", "a picture of {}.", "there are {} in the scene.")


def caption_for(names: Sequence[str], template: int = 0) -> str:
    """A caption listing ``names`` ("a photo of a red circle and a blue star.").

    ``template`` picks one of four phrasings (0 to 3).
    """
    if not names:
        raise ValueError("names must contain at least one class name, got an empty sequence")
    if not (isinstance(template, int) and 0 <= template < len(_TEMPLATES_1)):
        raise ValueError(f"template must be an integer in [0, {len(_TEMPLATES_1) - 1}], got {template!r}")
    if len(names) == 1:
        return _TEMPLATES_1[template].format(names[0])
    items = [f"a {n}" for n in names]
    listed = ", ".join(items[:-1]) + " and " + items[-1]
    return _TEMPLATES_N[template].format(listed)


@dataclass(frozen=True)
class Scene:
    """One generated image and its annotations.

    Attributes
    ----------
    image : uint8 tensor ``(3, H, W)``.
    mask : int64 tensor ``(H, W)``; the class index of the object covering the
        pixel, :data:`BACKGROUND` (255) elsewhere.
    instance_masks : bool tensor ``(N, H, W)``, the visible pixels of each object.
    classes : int64 tensor ``(N,)``, the class index of each object (all different).
    centres : float tensor ``(N, 2)``, object centres as ``(x, y)`` in pixels.
    radii : float tensor ``(N,)``, object radii (circumradius) in pixels.
    caption : the caption; names in random order.
    """

    image: torch.Tensor
    mask: torch.Tensor
    instance_masks: torch.Tensor
    classes: torch.Tensor
    centres: torch.Tensor
    radii: torch.Tensor
    caption: str


# ----------------------------------------------------------------------------
# rasterisation: inside tests on sub-pixel grids in object coordinates
# ----------------------------------------------------------------------------
def _polygon_inside(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule (crossing number) for the points ``(x, y)`` and a closed polygon ``(V, 2)``."""
    inside = np.zeros(x.shape, dtype=bool)
    xj, yj = verts[-1]
    for xi, yi in verts:
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < x_at)
        xj, yj = xi, yi
    return inside


def _regular(n: int, radius: float, phase: float = math.pi / 2) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], -1)


def _star_vertices() -> np.ndarray:
    a = math.pi / 2 + math.pi * np.arange(10) / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


_TRIANGLE = _regular(3, 1.0)
_DIAMOND = np.array([[0.0, 1.0], [-0.62, 0.0], [0.0, -1.0], [0.62, 0.0]])
_STAR = _star_vertices()


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test for the unit-size shape (circumradius 1) at object coordinates ``(u, v)``."""
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 0.9**2
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if shape == "semicircle":  # half disk; shifted so that its box is centred
        vv = v + 0.5
        return (u * u + vv * vv <= 1.0) & (vv >= 0)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if shape == "triangle":
        return _polygon_inside(u, v + 0.2, _TRIANGLE)
    if shape == "diamond":
        return _polygon_inside(u, v, _DIAMOND)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "star":
        return _polygon_inside(u, v, _STAR)
    if shape == "heart":  # (x² + y² - 1)³ - x² y³ <= 0, scaled into the unit disk
        x, y = u * 1.25, v * 1.25 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


class ToyWorld:
    """The world: taxonomy, seen/unseen split and a deterministic scene generator.

    Parameters
    ----------
    image_size : side of the square images in pixels, an integer in [32, 512] (default 64).
    seed : integer >= 0; scene ``i`` of a split depends only on ``(seed, split, i)``.
    min_radius, max_radius : object circumradius as a fraction of ``image_size``,
        ``0 < min_radius <= max_radius <= 0.3`` (defaults 0.16 and 0.26).
    max_rotation : objects are upright up to a rotation uniform in ``±max_rotation``
        degrees, in [0, 180] (default 20: shapes keep their canonical orientation,
        which a small ViT learns from few examples; 180 makes every orientation equally likely).
    noise : standard deviation of the per-pixel Gaussian noise, in 0-255 units, in [0, 50].

    Attributes
    ----------
    taxonomy : :class:`~hyro_edu.hierarchy.trees.Tree` with 67 nodes: ``"object"`` -> 3 families ->
        9 shapes -> 54 coloured shapes.
    class_names : the 54 leaf names, class index ``k = 6·shape + colour``.
    seen_classes, unseen_classes : class indices of the two open-vocabulary splits (36 and 18).
    """

    def __init__(
        self,
        image_size: int = 64,
        *,
        seed: int = 0,
        min_radius: float = 0.16,
        max_radius: float = 0.26,
        max_rotation: float = 20.0,
        noise: float = 6.0,
    ):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 32 <= image_size <= 512:
            raise ValueError(f"image_size must be an integer in [32, 512], got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if not (0 < min_radius <= max_radius <= 0.3):
            raise ValueError(
                f"min_radius and max_radius must satisfy 0 < min_radius <= max_radius <= 0.3, "
                f"got {min_radius} and {max_radius}"
            )
        if not 0 <= max_rotation <= 180:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {max_rotation}")
        if not 0 <= noise <= 50:
            raise ValueError(f"noise must be in [0, 50], got {noise}")
        self.image_size = image_size
        self.seed = seed
        self.min_radius = float(min_radius)
        self.max_radius = float(max_radius)
        self.max_rotation = float(max_rotation)
        ramp = np.arange(image_size, dtype=np.float32) / (image_size - 1) - 0.5
        self._grid = (ramp[None, :], ramp[:, None])  # x varies along columns, y along rows
        self.noise = float(noise)
        colours = tuple(COLOURS)
        self.colours = colours
        self.shapes = SHAPES
        self.families = tuple(FAMILIES)
        self.class_names: tuple[str, ...] = tuple(f"{c} {s}" for s in SHAPES for c in colours)
        self.taxonomy: Tree = Tree.from_nested(
            "object",
            {fam: {s: [f"{c} {s}" for c in colours] for s in shapes} for fam, shapes in FAMILIES.items()},
        )
        n_col = len(colours)
        unseen = [k for k in range(len(self.class_names)) if (k // n_col + k % n_col) % 3 == 0]
        self.unseen_classes: tuple[int, ...] = tuple(unseen)
        self.seen_classes: tuple[int, ...] = tuple(k for k in range(len(self.class_names)) if k not in unseen)

    # class bookkeeping ----------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def shape_of(self, k: int) -> str:
        """Shape word of class ``k``."""
        return self.shapes[self._class(k) // len(self.colours)]

    def colour_of(self, k: int) -> str:
        """Colour word of class ``k``."""
        return self.colours[self._class(k) % len(self.colours)]

    def family_of(self, k: int) -> str:
        """Family of class ``k`` ("round", "polygon" or "symbol")."""
        shape = self.shape_of(k)
        return next(fam for fam, shapes in FAMILIES.items() if shape in shapes)

    def node_of(self, k: int) -> int:
        """Index of class ``k``'s leaf in ``taxonomy``."""
        return self.taxonomy.names.index(self.class_names[self._class(k)])

    def class_subset(self, classes: Union[str, Sequence[int]]) -> tuple[int, ...]:
        """``"seen"``, ``"unseen"``, ``"all"`` or explicit class indices -> a tuple of indices."""
        if isinstance(classes, str):
            if classes == "seen":
                return self.seen_classes
            if classes == "unseen":
                return self.unseen_classes
            if classes == "all":
                return tuple(range(self.num_classes))
            raise ValueError(f"classes must be 'seen', 'unseen', 'all' or a sequence of indices, got {classes!r}")
        out = tuple(self._class(k) for k in classes)
        if not out or len(set(out)) != len(out):
            raise ValueError(f"classes must be a non-empty sequence of distinct class indices, got {classes!r}")
        return out

    def _class(self, k) -> int:
        k = int(k)
        if not 0 <= k < self.num_classes:
            raise ValueError(f"class index must be in [0, {self.num_classes - 1}], got {k}")
        return k

    # generation -----------------------------------------------------------------
    def scene(
        self,
        index: int,
        *,
        split: str = "train",
        classes: Union[str, Sequence[int]] = "all",
        num_objects: tuple[int, int] = (1, 3),
    ) -> Scene:
        """Generate scene ``index`` of ``split`` ("train", "val" or "test").

        ``num_objects = (lo, hi)``: the number of objects is uniform in ``[lo, hi]``,
        ``1 <= lo <= hi <= 4``; their classes are distinct, drawn from ``classes``.
        Three objects of the default sizes always fit in the image; four fit after
        smaller radii are drawn, or, rarely, the scene keeps three.
        Deterministic: the same arguments give the same scene.
        """
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index must be an integer >= 0, got {index!r}")
        lo, hi = num_objects
        allowed = self.class_subset(classes)
        if not (1 <= lo <= hi <= 4):
            raise ValueError(f"num_objects must be (lo, hi) with 1 <= lo <= hi <= 4, got {num_objects!r}")
        if hi > len(allowed):
            raise ValueError(f"num_objects upper bound {hi} exceeds the {len(allowed)} allowed classes")
        rng = np.random.default_rng([self.seed, _SPLITS[split], int(index)])
        size = self.image_size
        n = int(rng.integers(lo, hi + 1))
        classes_ = rng.choice(np.asarray(allowed), size=n, replace=False)
        centres, radii = self._place(rng, n)
        n = len(radii)  # _place may return fewer discs than asked when four do not fit
        classes_ = classes_[:n]

        # background: a grey level with a gentle gradient
        grey = rng.uniform(50, 140)
        tint = rng.uniform(-8, 8, size=3)
        ramp = rng.uniform(-25, 25, size=2)
        xx, yy = self._grid
        bg = (grey + ramp[0] * xx + ramp[1] * yy)[None] + tint[:, None, None].astype(np.float32)
        image = np.ascontiguousarray(bg, dtype=np.float32)

        mask = np.full((size, size), BACKGROUND, dtype=np.int64)
        inst = np.zeros((n, size, size), dtype=bool)
        ss = 4  # sub-samples per pixel side, for anti-aliased edges
        offsets = (np.arange(ss) + 0.5) / ss - 0.5
        for i, (k, (cx, cy), r) in enumerate(zip(classes_, centres, radii)):
            shape = self.shape_of(int(k))
            colour = np.asarray(COLOURS[self.colour_of(int(k))], dtype=np.float64)
            colour = np.clip(colour + rng.uniform(-20, 20, size=3), 0, 255).astype(np.float32)
            theta = math.radians(rng.uniform(-self.max_rotation, self.max_rotation))
            x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, size)
            y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, size)
            py = np.arange(y0, y1)[:, None, None, None] + 0.5 + offsets[None, None, :, None]
            px = np.arange(x0, x1)[None, :, None, None] + 0.5 + offsets[None, None, None, :]
            dx, dy = (px - cx) / r, (py - cy) / r
            # rotate into object coordinates; image y points down, object v points up
            u = math.cos(theta) * dx + math.sin(theta) * dy
            v = math.sin(theta) * dx - math.cos(theta) * dy
            cover = _inside(shape, u, v).mean(axis=(2, 3), dtype=np.float32)  # (h, w) in [0, 1]
            patch = image[:, y0:y1, x0:x1]
            image[:, y0:y1, x0:x1] = patch * (1 - cover) + colour[:, None, None] * cover
            visible = cover >= 0.5
            inst[i, y0:y1, x0:x1] = visible
            mask[y0:y1, x0:x1][visible] = int(k)

        image += rng.standard_normal(size=image.shape, dtype=np.float32) * np.float32(self.noise)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        order = rng.permutation(n)
        caption = caption_for([self.class_names[int(classes_[j])] for j in order], int(rng.integers(4)))
        return Scene(
            image=torch.from_numpy(image),
            mask=torch.from_numpy(mask),
            instance_masks=torch.from_numpy(inst),
            classes=torch.from_numpy(classes_.astype(np.int64)),
            centres=torch.from_numpy(centres),
            radii=torch.from_numpy(radii),
            caption=caption,
        )

    def _place(self, rng: np.random.Generator, n: int):
        """Non-overlapping discs inside the image (2 px apart): rejection sampling, largest first.

        If the discs do not fit, all radii are drawn again, shrinking towards
        ``min_radius`` on every retry; as a last resort fewer objects are returned.
        """
        size = self.image_size
        for attempt in range(20):
            shrink = 1.0 - attempt / 20
            hi = self.min_radius + (self.max_radius - self.min_radius) * shrink
            radii = np.sort(rng.uniform(self.min_radius, hi, size=n) * size)[::-1].copy()
            centres = np.zeros((n, 2))
            placed = 0
            for i, r in enumerate(radii):
                for _ in range(100):
                    c = rng.uniform(r + 1, size - r - 1, size=2)
                    if all(np.hypot(*(c - centres[j])) >= r + radii[j] + 2 for j in range(i)):
                        centres[i] = c
                        placed += 1
                        break
                else:
                    break
            if placed == n:
                return centres, radii
        return centres[:placed], radii[:placed]


# ----------------------------------------------------------------------------
# transforms and datasets
# ----------------------------------------------------------------------------
class ToyTransform:
    """uint8 image ``(3, H, W)`` (+ class map ``(H, W)``) -> normalised float image (+ map).

    Parameters
    ----------
    size : output side in pixels (``None`` keeps the input size); the image is
        resized bicubically, the class map by nearest neighbour.
    mean, std : per-channel normalisation on the [0, 1] scale (default CLIP's).
    hflip : probability in [0, 1] of a horizontal flip (image and map together).
    """

    def __init__(
        self,
        size: Optional[int] = None,
        *,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        hflip: float = 0.0,
    ):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
            raise ValueError(f"size must be None or an integer >= 8, got {size!r}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must have 3 entries each, std > 0; got {mean} and {std}")
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.hflip = float(hflip)

    def __call__(self, image: torch.Tensor, mask: Optional[torch.Tensor] = None, *, generator=None):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be a uint8 tensor (3, H, W), got {image.dtype} {tuple(image.shape)}")
        x = image.float() / 255.0
        if self.hflip > 0 and float(torch.rand((), generator=generator)) < self.hflip:
            x = x.flip(-1)
            mask = mask.flip(-1) if mask is not None else None
        if self.size is not None and self.size != x.shape[-1]:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bicubic", align_corners=False)[0]
            x = x.clamp(0, 1)
            if mask is not None:
                mask = F.interpolate(mask[None, None].float(), size=(self.size, self.size), mode="nearest")
                mask = mask[0, 0].long()
        x = (x - self.mean) / self.std
        return x if mask is None else (x, mask)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: float image(s) ``(..., 3, H, W)`` in [0, 1] for plotting."""
        return (x * self.std + self.mean).clamp(0, 1)


class _ToyDataset(Dataset):
    """Scenes ``seed_offset .. seed_offset + length - 1`` of one split (parameters: see :class:`ToyImageDataset`)."""

    def __init__(
        self,
        world: ToyWorld,
        length: int,
        *,
        split: str = "train",
        classes: Union[str, Sequence[int]] = "seen",
        num_objects: tuple[int, int] = (1, 3),
        transform: Optional[ToyTransform] = None,
        seed_offset: int = 0,
    ):
        if not isinstance(world, ToyWorld):
            raise ValueError(f"world must be a ToyWorld, got {type(world).__name__}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        self.world = world
        self.length = length
        self.split = split
        self.classes = world.class_subset(classes)
        self.num_objects = tuple(num_objects)
        self.transform = transform if transform is not None else ToyTransform()
        self.seed_offset = int(seed_offset)
        world.scene(0, split=split, classes=self.classes, num_objects=self.num_objects)  # validates

    def __len__(self) -> int:
        return self.length

    def _scene(self, i: int) -> Scene:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for a dataset of length {self.length}")
        i = i % self.length
        return self.world.scene(
            i + self.seed_offset, split=self.split, classes=self.classes, num_objects=self.num_objects
        )

    def _labels(self, scene: Scene) -> torch.Tensor:
        labels = torch.zeros(self.world.num_classes)
        labels[scene.classes] = 1.0
        return labels

    def _generator(self, i: int) -> torch.Generator:
        # numpy's SeedSequence mixes the integers deterministically (Python's hash() of a str
        # is salted per process, so it would break reproducibility across workers)
        seq = np.random.SeedSequence([self.world.seed, _SPLITS[self.split], self.seed_offset, i, 1])
        return torch.Generator().manual_seed(int(seq.generate_state(1)[0]))


class ToyImageDataset(_ToyDataset):
    """Image-level samples: ``dict(image=(3, S, S) float, labels=(54,) multi-hot, caption=str)``.

    Parameters
    ----------
    world : the :class:`ToyWorld`.
    length : number of samples (scenes ``seed_offset .. seed_offset + length - 1`` of ``split``).
    split : "train", "val" or "test".
    classes : "seen", "unseen", "all" or explicit class indices the objects are drawn from.
    num_objects : ``(lo, hi)``, objects per image.
    transform : a :class:`ToyTransform` (default: CLIP normalisation at the world's size).
    """

    def __getitem__(self, i: int) -> dict:
        scene = self._scene(i)
        image = self.transform(scene.image, generator=self._generator(i))
        return {"image": image, "labels": self._labels(scene), "caption": scene.caption}


class ToyPixelDataset(_ToyDataset):
    """Pixel-level samples: ``dict(image=(3, S, S) float, mask=(S, S) int64, labels=(54,))``.

    ``mask`` holds class indices and :data:`BACKGROUND` (255).  Same parameters as
    :class:`ToyImageDataset`.
    """

    def __getitem__(self, i: int) -> dict:
        scene = self._scene(i)
        image, mask = self.transform(scene.image, scene.mask, generator=self._generator(i))
        return {"image": image, "mask": mask, "labels": self._labels(scene), "caption": scene.caption}
