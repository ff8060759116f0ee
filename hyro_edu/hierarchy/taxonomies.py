"""Small real taxonomies shipped with the package (facts: class names and their grouping).

* :func:`cifar100_hierarchy` -- the 20 superclasses and 100 classes of
  CIFAR-100 (Krizhevsky, *Learning Multiple Layers of Features from Tiny
  Images*, 2009, Appendix D), under one root: 121 nodes, depth 2.
"""
from __future__ import annotations

from hyro_edu.hierarchy.trees import Tree

__all__ = ["CIFAR100_SUPERCLASSES", "cifar100_hierarchy"]

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
