"""The procedural toy world: determinism, masks that match the objects, a consistent taxonomy."""
from __future__ import annotations

import itertools

import pytest
import torch

from hyro_edu.data.toyworld import (
    BACKGROUND,
    CLIP_MEAN,
    CLIP_STD,
    COLOURS,
    FAMILIES,
    SHAPES,
    ToyImageDataset,
    ToyPixelDataset,
    ToyTransform,
    ToyWorld,
    caption_for,
)


@pytest.fixture(scope="module")
def world():
    return ToyWorld()


def scenes_equal(a, b) -> bool:
    return (
        torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
        and torch.equal(a.instance_masks, b.instance_masks) and torch.equal(a.classes, b.classes)
        and a.caption == b.caption
    )


def test_scenes_are_deterministic_given_seed_split_and_index(world):
    again = ToyWorld()
    for i in range(5):
        assert scenes_equal(world.scene(i), again.scene(i))
    # order does not matter: scene 3 generated after scene 7 is the same
    late = [again.scene(7), again.scene(3)][1]
    assert scenes_equal(world.scene(3), late)
    assert not torch.equal(world.scene(0).image, world.scene(1).image)
    assert not torch.equal(world.scene(0, split="train").image, world.scene(0, split="test").image)
    assert not torch.equal(world.scene(0).image, ToyWorld(seed=1).scene(0).image)


def test_datasets_are_deterministic_including_random_flips(world):
    transform = ToyTransform(hflip=0.5)
    a = ToyPixelDataset(world, 12, transform=transform)
    b = ToyPixelDataset(ToyWorld(), 12, transform=ToyTransform(hflip=0.5))
    for i in (0, 5, 11):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    flipped = sum(
        not torch.equal(a[i]["mask"], ToyPixelDataset(world, 12)[i]["mask"]) for i in range(12)
    )
    assert 0 < flipped < 12  # some samples are flipped, some are not


def test_masks_match_the_objects(world):
    for i in range(40):
        s = world.scene(i, num_objects=(1, 4))
        n = len(s.classes)
        assert s.instance_masks.shape == (n, world.image_size, world.image_size)
        assert 1 <= n <= 4 and len(set(s.classes.tolist())) == n
        # every object is visible, objects are disjoint, the class map is their union
        areas = s.instance_masks.sum(dim=(1, 2))
        assert bool((areas > 0).all())
        assert int(s.instance_masks.sum(0).max()) == 1
        assert torch.equal(s.mask != BACKGROUND, s.instance_masks.any(0))
        for j in range(n):
            k = int(s.classes[j])
            assert bool((s.mask[s.instance_masks[j]] == k).all())
            # the pixels of the mask carry the object's colour (jitter ±20, noise σ=6)
            mean_rgb = s.image[:, s.instance_masks[j]].float().mean(1)
            nominal = torch.tensor(COLOURS[world.colour_of(k)], dtype=torch.float32)
            assert float((mean_rgb - nominal).abs().max()) < 30, (i, j, world.class_names[k])
            # the mask lies within the object's disc and is a sizeable part of it
            ys, xs = torch.nonzero(s.instance_masks[j], as_tuple=True)
            cx, cy = s.centres[j].tolist()
            r = float(s.radii[j])
            dist = ((xs.double() + 0.5 - cx) ** 2 + (ys.double() + 0.5 - cy) ** 2).sqrt()
            assert float(dist.max()) <= r * 1.2 + 1
            assert 0.15 * torch.pi * r * r <= float(areas[j]) <= torch.pi * (r + 1) ** 2
        # objects are 2 px apart and inside the image
        for a, b in itertools.combinations(range(n), 2):
            gap = float((s.centres[a] - s.centres[b]).norm()) - float(s.radii[a] + s.radii[b])
            assert gap >= 2 - 1e-9
        assert bool((s.centres - s.radii[:, None] >= 1 - 1e-9).all())
        assert bool((s.centres + s.radii[:, None] <= world.image_size - 1 + 1e-9).all())


def test_taxonomy_has_three_levels_and_matches_the_labels(world):
    tree = world.taxonomy
    assert len(tree) == 1 + 3 + 9 + 54 and max(tree.depths) == 3
    assert set(tree.names[i] for i in tree.leaves) == set(world.class_names)
    assert world.num_classes == len(SHAPES) * len(COLOURS) == 54
    for k, name in enumerate(world.class_names):
        node = world.node_of(k)
        parent, grandparent = tree.parents[node], tree.parents[tree.parents[node]]
        assert tree.names[parent] == world.shape_of(k)
        assert tree.names[grandparent] == world.family_of(k)
        assert world.shape_of(k) in FAMILIES[world.family_of(k)]
        assert name == f"{world.colour_of(k)} {world.shape_of(k)}"
        assert tree.depths[node] == 3


def test_labels_and_captions_name_exactly_the_objects(world):
    data = ToyImageDataset(world, 30, classes="all", num_objects=(1, 3))
    for i in range(30):
        s = world.scene(i, classes=data.classes, num_objects=(1, 3))
        item = data[i]
        assert torch.equal(torch.nonzero(item["labels"]).flatten().sort().values, s.classes.sort().values)
        assert item["caption"] == s.caption
        named = [n for n in world.class_names if f"a {n}" in s.caption]
        assert sorted(named) == sorted(world.class_names[k] for k in s.classes.tolist())


def test_seen_unseen_split_is_compositional(world):
    seen, unseen = set(world.seen_classes), set(world.unseen_classes)
    assert seen.isdisjoint(unseen) and len(seen | unseen) == world.num_classes
    assert len(unseen) == 18 and len(seen) == 36
    seen_words = {w for k in seen for w in world.class_names[k].split()}
    for k in unseen:  # every unseen name is made of words seen in training
        assert set(world.class_names[k].split()) <= seen_words
    # neither word alone identifies an unseen class among the unseen names
    for k in unseen:
        assert sum(world.colour_of(j) == world.colour_of(k) for j in unseen) >= 2
        assert sum(world.shape_of(j) == world.shape_of(k) for j in unseen) >= 2
    # scenes drawn from a split contain only that split's classes
    for i in range(20):
        assert set(world.scene(i, classes="unseen").classes.tolist()) <= unseen
        assert set(world.scene(i, classes="seen").classes.tolist()) <= seen


def test_transform_normalises_resizes_and_flips_image_and_mask_together(world):
    s = world.scene(3)
    x, m = ToyTransform()(s.image, s.mask)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(x * std + mean, s.image.float() / 255)
    assert torch.equal(m, s.mask)
    xf, mf = ToyTransform(hflip=1.0)(s.image, s.mask)
    assert torch.equal(mf, s.mask.flip(-1)) and torch.allclose(xf, x.flip(-1))
    big, mbig = ToyTransform(128)(s.image, s.mask)
    assert big.shape == (3, 128, 128) and mbig.shape == (128, 128)
    assert torch.equal(mbig[::2, ::2], s.mask)  # nearest neighbour keeps every label
    assert set(mbig.unique().tolist()) <= set(s.classes.tolist()) | {BACKGROUND}


def test_caption_for():
    assert caption_for(["red circle"]) == "a photo of a red circle."
    assert caption_for(["red circle", "blue star"], 1) == "a red circle and a blue star."
    assert caption_for(["a b", "c d", "e f"]) == "a photo of a a b, a c d and a e f."


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ToyWorld(image_size=16), "image_size must be an integer in"),
        (lambda: ToyWorld(seed=-1), "seed must be an integer >= 0"),
        (lambda: ToyWorld(min_radius=0.3, max_radius=0.2), "min_radius and max_radius"),
        (lambda: ToyWorld(max_rotation=200), "max_rotation must be in"),
        (lambda: ToyWorld().scene(0, split="holdout"), "split must be one of"),
        (lambda: ToyWorld().scene(-1), "index must be an integer >= 0"),
        (lambda: ToyWorld().scene(0, num_objects=(0, 2)), "num_objects must be"),
        (lambda: ToyWorld().scene(0, classes="novel"), "classes must be 'seen'"),
        (lambda: ToyWorld().scene(0, classes=[99]), r"class index must be in \[0, 53\]"),
        (lambda: ToyWorld().scene(0, classes=[1], num_objects=(1, 2)), "exceeds the 1 allowed"),
        (lambda: ToyTransform(hflip=2.0), "hflip must be a probability"),
        (lambda: ToyTransform()(torch.zeros(3, 8, 8)), "image must be a uint8 tensor"),
        (lambda: ToyImageDataset(ToyWorld(), 0), "length must be an integer >= 1"),
        (lambda: caption_for([]), "names must contain at least one"),
    ],
)
def test_bad_input_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
