"""Small real taxonomies shipped with the package (facts: class names and their grouping).

* :func:`cifar100_hierarchy` -- the 20 superclasses and 100 classes of
  CIFAR-100 (Krizhevsky, *Learning Multiple Layers of Features from Tiny
  Images*, 2009, Appendix D), under one root: 121 nodes, depth 2.
* The label hierarchies of HVSA's segmentation benchmarks :cite:`hvsa` (Sec. 5, Tables 3-5),
  each a :class:`LevelTaxonomy` (a :class:`~hyro_edu.hierarchy.trees.Tree` plus the class ->
  level maps that :func:`hyro_edu.hierarchy.metrics.level_mean_iou` takes):
  :func:`cityscapes_levels` (19 -> 7), :func:`lip_levels` (20 -> 3 -> 2),
  :func:`pascal_person_part_levels` (7 -> 3 -> 2) and :func:`toyworld_levels` (55 -> 10 -> 4,
  the toy world with background as a class); :func:`toyworld_hierarchy` is the toy world's
  67-node image-level taxonomy.

Level 1 is the finest level (the dataset's class ids); level ``l + 1`` groups level ``l``.  A
class that has no finer split at a level (LIP's and PASCAL-Person-Part's background, Cityscapes'
sky, the toy world's background) is one node of the tree, shallower than the others, and is its
own class at every coarser level.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "CIFAR100_SUPERCLASSES",
    "cifar100_hierarchy",
    "LevelTaxonomy",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_CATEGORIES",
    "cityscapes_levels",
    "LIP_CLASSES",
    "lip_levels",
    "PASCAL_PERSON_PART_CLASSES",
    "pascal_person_part_levels",
    "TOYWORLD_FAMILIES",
    "TOYWORLD_COLOURS",
    "TOYWORLD_BACKGROUND",
    "toyworld_hierarchy",
    "toyworld_levels",
    "toyworld_pixel_classes",
]

CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit and vegetables": ("apple", "mushroom", "orange", "pear", "sweet pepper"),
    "household electrical devices": ("clock", "computer keyboard", "lamp", "telephone", "television"),
    "household furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large man-made outdoor things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large natural outdoor scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large omnivores and herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium-sized mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple tree", "oak tree", "palm tree", "pine tree", "willow tree"),
    "vehicles 1": ("bicycle", "bus", "motorcycle", "pickup truck", "train"),
    "vehicles 2": ("lawn mower", "rocket", "streetcar", "tank", "tractor"),
}


def cifar100_hierarchy() -> Tree:
    """CIFAR-100 as a tree: root ``"object"`` -> 20 superclasses -> 100 classes."""
    return Tree.from_nested("object", {sup: list(classes) for sup, classes in CIFAR100_SUPERCLASSES.items()})


# ----------------------------------------------------------------------------
# segmentation label sets with levels
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LevelTaxonomy:
    r"""A segmentation label set and its coarser levels, read off a tree.

    .. math::
        \mathrm{map}_l(k) = \text{index in } \texttt{level\_nodes[l-1]} \text{ of the unique node of
        that level that is } k\text{'s node or one of its ancestors}

    Attributes
    ----------
    tree : the :class:`~hyro_edu.hierarchy.trees.Tree` (its root is not a class).
    class_nodes : tuple of int, the tree node of each finest class, in class-id order (level 1).
    level_nodes : tuple of tuples of int; ``level_nodes[l - 1]`` lists the tree nodes of the
        classes of level ``l`` in class-index order (``level_nodes[0] == class_nodes``).
    ignore_index : the label that the metrics skip (255), or ``None``.

    Checked on construction: nodes exist and are not the root, no node is listed twice in a
    level, and every class has exactly one ancestor-or-self in every level (so the maps exist).
    """

    tree: Tree
    class_nodes: tuple[int, ...]
    level_nodes: tuple[tuple[int, ...], ...]
    ignore_index: int | None = 255

    def __post_init__(self):
        if not isinstance(self.tree, Tree):
            raise ValueError(f"tree must be a hyro_edu.hierarchy.trees.Tree, got {type(self.tree).__name__}")
        n = len(self.tree)
        if not self.level_nodes or tuple(self.level_nodes[0]) != tuple(self.class_nodes):
            raise ValueError("level_nodes[0] must equal class_nodes (level 1 is the finest level)")
        for level, nodes in enumerate(self.level_nodes, start=1):
            if not nodes or len(set(nodes)) != len(nodes) or not all(1 <= v < n for v in nodes):
                raise ValueError(
                    f"level_nodes[{level - 1}] must list distinct non-root nodes in [1, {n - 1}], got {nodes}"
                )
            members = set(nodes)
            for k, v in enumerate(self.class_nodes):
                hits = [u for u in [v, *self.tree.ancestors(v)] if u in members]
                if len(hits) != 1:
                    raise ValueError(
                        f"level_nodes[{level - 1}] must contain exactly one ancestor-or-self of every class; "
                        f"class {k} ({self.tree.names[v]!r}) has {len(hits)}"
                    )

    @property
    def num_levels(self) -> int:
        return len(self.level_nodes)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the finest classes, in class-id order."""
        return tuple(self.tree.names[v] for v in self.class_nodes)

    def _level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= self.num_levels:
            raise ValueError(f"level must be an integer in [1, {self.num_levels}], got {level!r}")
        return level

    def level_names(self, level: int) -> tuple[str, ...]:
        """Names of the classes of ``level`` (1 = finest), in class-index order."""
        return tuple(self.tree.names[v] for v in self.level_nodes[self._level(level) - 1])

    def num_classes(self, level: int) -> int:
        return len(self.level_nodes[self._level(level) - 1])

    def level_map(self, level: int) -> tuple[int, ...]:
        """Finest class id -> class index at ``level`` (length ``num_classes(1)``; identity at level 1)."""
        nodes = self.level_nodes[self._level(level) - 1]
        index = {v: i for i, v in enumerate(nodes)}
        out = []
        for v in self.class_nodes:
            out.append(next(index[u] for u in [v, *self.tree.ancestors(v)] if u in index))
        return tuple(out)

    @property
    def level_maps(self) -> tuple[tuple[int, ...], ...]:
        """``level_map(l)`` for ``l = 1 .. num_levels``."""
        return tuple(self.level_map(level) for level in range(1, self.num_levels + 1))


def _by_name(tree: Tree, names) -> tuple[int, ...]:
    return tuple(tree.names.index(name) for name in names)


#: The 19 Cityscapes evaluation classes in trainId order (cityscapesScripts ``helpers/labels.py``).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
#: The 7 categories of those classes (cityscapesScripts' ``category``; HSSN's super-classes).
CITYSCAPES_CATEGORIES: dict[str, tuple[str, ...]] = {
    "flat": ("road", "sidewalk"),
    "construction": ("building", "wall", "fence"),
    "object": ("pole", "traffic light", "traffic sign"),
    "nature": ("vegetation", "terrain"),
    "sky": ("sky",),
    "human": ("person", "rider"),
    "vehicle": ("car", "truck", "bus", "train", "motorcycle", "bicycle"),
}


def cityscapes_levels() -> LevelTaxonomy:
    """Cityscapes: 19 trainId classes (level 1) -> 7 categories (level 2); ignore label 255.

    The categories are cityscapesScripts' ``category`` field (``helpers/labels.py``), which are
    HSSN's 7 super-classes (Li et al., CVPR 2022); HVSA's text says 6 :cite:`hvsa`, Sec. 5.
    The category "sky" holds only the class "sky", so they are one node (depth 1): level maps
    ``(0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)`` at level 2.
    """
    groups = {cat: (None if members == (cat,) else list(members)) for cat, members in CITYSCAPES_CATEGORIES.items()}
    tree = Tree.from_nested("cityscapes", groups)
    classes = _by_name(tree, CITYSCAPES_CLASSES)
    return LevelTaxonomy(tree, classes, (classes, _by_name(tree, CITYSCAPES_CATEGORIES)), ignore_index=255)


#: The 20 LIP labels in id order (0 is the background).
LIP_CLASSES: tuple[str, ...] = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks",
    "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg",
    "right-leg", "left-shoe", "right-shoe",
)
_LIP_UPPER = (1, 2, 3, 4, 5, 6, 7, 10, 11, 13, 14, 15)
_LIP_LOWER = (8, 9, 12, 16, 17, 18, 19)


def lip_levels() -> LevelTaxonomy:
    """LIP: 20 labels -> {background, upper-body, lower-body} -> {background, human}; ignore 255.

    Tree ``LIP -> {background, human}``, ``human -> {upper-body, lower-body}``, then the parts:
    upper-body = hat, hair, glove, sunglasses, upper-clothes, dress, coat, jumpsuits, scarf, face,
    left/right arm; lower-body = socks, pants, skirt, left/right leg, left/right shoe (the
    grouping of HSSN, Li et al., CVPR 2022, used by HVSA :cite:`hvsa`, Table 4). Background is
    background at every level.
    """
    parts = {
        "background": None,
        "human": {
            "upper-body": [LIP_CLASSES[k] for k in _LIP_UPPER],
            "lower-body": [LIP_CLASSES[k] for k in _LIP_LOWER],
        },
    }
    tree = Tree.from_nested("LIP", parts)
    classes = _by_name(tree, LIP_CLASSES)
    levels = (
        classes,
        _by_name(tree, ("background", "upper-body", "lower-body")),
        _by_name(tree, ("background", "human")),
    )
    return LevelTaxonomy(tree, classes, levels, ignore_index=255)


#: The 7 PASCAL-Person-Part labels in HSSN's id order (0 is the background).
PASCAL_PERSON_PART_CLASSES: tuple[str, ...] = (
    "background", "head", "torso", "upper-arm", "lower-arm", "upper-leg", "lower-leg",
)


def pascal_person_part_levels() -> LevelTaxonomy:
    """PASCAL-Person-Part: 7 labels -> {background, upper-body, lower-body} -> {background, person}.

    upper-body = head, torso, upper-arm, lower-arm; lower-body = upper-leg, lower-leg (HSSN's
    grouping, Li et al., CVPR 2022; HVSA :cite:`hvsa`, Table 5). Ids in HSSN's order; other
    redistributions order the parts differently, so the grouping is keyed by name. Ignore 255.
    """
    parts = {
        "background": None,
        "person": {
            "upper-body": ["head", "torso", "upper-arm", "lower-arm"],
            "lower-body": ["upper-leg", "lower-leg"],
        },
    }
    tree = Tree.from_nested("PASCAL-Person-Part", parts)
    classes = _by_name(tree, PASCAL_PERSON_PART_CLASSES)
    levels = (
        classes,
        _by_name(tree, ("background", "upper-body", "lower-body")),
        _by_name(tree, ("background", "person")),
    )
    return LevelTaxonomy(tree, classes, levels, ignore_index=255)


#: The toy world's families and their shapes, in class-index order (as ``hyro_edu.data.toyworld``).
TOYWORLD_FAMILIES: dict[str, tuple[str, ...]] = {
    "round": ("circle", "ring", "semicircle"),
    "polygon": ("square", "triangle", "diamond"),
    "symbol": ("cross", "star", "heart"),
}
#: The toy world's colour words, in class-index order (leaf ``k = 6 * shape + colour``).
TOYWORLD_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
#: The background label of the toy world's class maps; :func:`toyworld_levels` makes it a class.
TOYWORLD_BACKGROUND = 255


def toyworld_hierarchy() -> Tree:
    """The toy world's image-level taxonomy: ``object`` -> 3 families -> 9 shapes -> 54 leaves.

    67 nodes numbered breadth-first (0 root, 1-3 families, 4-12 shapes, 13-66 leaves, leaf
    ``k = 6 * shape + colour`` at node ``13 + k``), the same tree as
    ``hyro_edu.data.toyworld.ToyWorld().taxonomy`` (tested). Its 66 non-root nodes are the labels
    of :mod:`hyro_edu.hierarchy.metrics` (label ``i`` = node ``i + 1``).
    """
    return Tree.from_nested(
        "object",
        {
            fam: {s: [f"{c} {s}" for c in TOYWORLD_COLOURS] for s in shapes}
            for fam, shapes in TOYWORLD_FAMILIES.items()
        },
    )


def toyworld_levels() -> LevelTaxonomy:
    """The toy world at pixel level: 55 classes -> 10 shapes -> 4 families, background included.

    Class ``k < 54`` is the leaf ``6 * shape + colour``; class 54 is the background (the class
    maps' :data:`TOYWORLD_BACKGROUND`, 255, relabelled 54 before evaluation), its own class at
    every level with index 54 / 9 / 3 (``map_2(k) = k // 6``, ``map_3(k) = k // 18``). The tree
    is :func:`toyworld_hierarchy` with ``background`` added as a root child (node 67, last so the
    other nodes keep their numbers). Nothing is ignored (``ignore_index=None``).
    """
    base = toyworld_hierarchy()
    tree = Tree(base.names + ("background",), base.parents + (0,))
    background = len(base)
    leaves = tuple(range(13, 67)) + (background,)
    shapes = tuple(range(4, 13)) + (background,)
    families = (1, 2, 3, background)
    return LevelTaxonomy(tree, leaves, (leaves, shapes, families), ignore_index=None)


def toyworld_pixel_classes(mask: torch.Tensor) -> torch.Tensor:
    """A toy-world class map with :data:`TOYWORLD_BACKGROUND` (255) relabelled 54, the background
    class of :func:`toyworld_levels`; other labels must be leaf classes in ``[0, 53]``.

    Shapes: any integer tensor; returns int64 of the same shape.
    """
    mask = torch.as_tensor(mask)
    if mask.is_floating_point() or mask.dtype == torch.bool:
        raise ValueError(f"mask must hold integer class labels, got dtype {mask.dtype}")
    mask = mask.long()
    background = mask == TOYWORLD_BACKGROUND
    bad = ~background & ((mask < 0) | (mask >= 54))
    if bool(bad.any()):
        raise ValueError(
            f"mask must hold leaf classes in [0, 53] or {TOYWORLD_BACKGROUND} (background), "
            f"got {mask[bad].unique()[:5].tolist()}"
        )
    return torch.where(background, torch.full_like(mask, 54), mask)
