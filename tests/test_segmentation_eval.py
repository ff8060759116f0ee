"""The evaluation protocol: sliding window, the whole-image path, mIoU (both averages, against
torchmetrics and a direct ground-truth-present oracle), PAS-20b, class truncation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hyro_edu.segmentation.evaluation import (
    CLIP_PIXEL_MEAN,
    OFFICIAL_SIZE_DIVISIBILITY,
    MeanIoU,
    collapse_background,
    evaluate,
    gather_classes,
    pad_to_multiple,
    resize_shortest_edge,
    scatter_classes,
    select_classes,
    sliding_window_inference,
    whole_image_inference,
)


class PointwiseModel:
    """A per-pixel affine map of the colours to T logits: translation-equivariant, no receptive field."""

    def __init__(self, num_classes=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(num_classes, 3, 1, 1, generator=g, dtype=torch.float64) / 100
        self.bias = torch.randn(num_classes, generator=g, dtype=torch.float64)
        self.calls = []

    def __call__(self, images, classes):
        self.calls.append((tuple(images.shape), classes))
        return F.conv2d(images.double(), self.weight, self.bias)


class PositionModel(PointwiseModel):
    """Adds the row index within the view: not translation-equivariant."""

    def __call__(self, images, classes):
        out = super().__call__(images, classes)
        return out + torch.arange(out.shape[-2], dtype=out.dtype)[:, None] / 50


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _smooth_image(size=384):
    t = torch.linspace(0, 1, size, dtype=torch.float64)
    r = 128 + 100 * torch.sin(3 * t)[:, None] * torch.cos(2 * t)[None, :]
    return torch.stack([r, 255 - r, r.T])


def test_the_windows_fold_back_to_inference_on_the_whole_640_image():
    x = torch.rand(3, 384, 384, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 255
    model = PointwiseModel()
    tiled = sliding_window_inference(model, x, "cls", global_view=False, activation=None, output_size=(640, 640))
    direct = model(_resize(x[None], (640, 640)), None)[0]
    torch.testing.assert_close(tiled, direct, rtol=1e-10, atol=1e-10)
    # a model that sees where it is in the crop breaks the equality: the check can fail
    shifted = sliding_window_inference(PositionModel(), x, None, global_view=False, activation=None,
                                       output_size=(640, 640))
    assert (shifted - direct).abs().max() > 1.0


def test_sliding_window_on_a_384_image_reproduces_direct_inference():
    x = _smooth_image()
    model = PointwiseModel()
    out = sliding_window_inference(model, x, ["a", "b", "c", "d"], activation=None)
    direct = model(x[None], None)[0]
    # both views give resize_640(model(x)); the result is that map brought back to 384
    torch.testing.assert_close(out, _resize(_resize(direct[None], (640, 640)), (384, 384))[0], rtol=1e-10, atol=1e-10)
    # and for a smooth image the round trip costs almost nothing: sliding window = direct inference
    torch.testing.assert_close(out, direct, rtol=0, atol=2e-3 * float(direct.abs().max()))
    probs = sliding_window_inference(model, x, None)
    torch.testing.assert_close(probs, direct.sigmoid(), rtol=0, atol=2e-3)
    assert float((probs.argmax(0) == direct.argmax(0)).double().mean()) > 0.99  # only near-ties can differ


def test_the_official_geometry_five_views_of_384():
    model = PointwiseModel()
    classes = ["wall", "sky"]
    out = sliding_window_inference(model, torch.zeros(2, 3, 500, 700), classes)
    assert out.shape == (2, 4, 500, 700)
    assert [c[0] for c in model.calls] == [(5, 3, 384, 384)] * 2  # 2 x 2 crops (stride 256) + global
    assert all(c[1] is classes for c in model.calls)
    assert out.min() >= 0 and out.max() <= 1  # sigmoid scores


def test_a_working_size_the_stride_does_not_divide_is_still_covered():
    x = torch.rand(3, 300, 300, dtype=torch.float64) * 255
    model = PointwiseModel()
    tiled = sliding_window_inference(model, x, None, out_res=700, global_view=False, activation=None,
                                     output_size=(700, 700))
    assert len(model.calls) == 1 and model.calls[0][0][0] == 9  # starts 0, 256 and the flush window 316
    torch.testing.assert_close(tiled, model(_resize(x[None], (700, 700)), None)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(overlap=1.0), "overlap must be a number in"),
        (dict(kernel=700), "out_res must be >= kernel"),
        (dict(kernel=0), "kernel must be an integer >= 1"),
        (dict(activation="softmax"), "activation must be"),
        (dict(output_size=(0, 5)), r"output_size\[0\] must be an integer >= 1"),
    ],
)
def test_sliding_window_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliding_window_inference(PointwiseModel(), torch.zeros(3, 8, 8), None, **kwargs)


def test_sliding_window_rejects_bad_images_and_model_outputs():
    with pytest.raises(ValueError, match=r"image must have shape \(3, H, W\)"):
        sliding_window_inference(PointwiseModel(), torch.zeros(1, 8, 8), None)
    with pytest.raises(ValueError, match="model output must be a tensor of shape"):
        sliding_window_inference(lambda im, c: im[:, 0], torch.zeros(3, 8, 8), None)


def test_whole_image_inference_is_one_view_at_the_clip_resolution():
    for mode in ("official", "resize"):
        model = PointwiseModel()
        out = whole_image_inference(model, torch.zeros(3, 50, 70), None, mode=mode)
        assert out.shape == (4, 50, 70) and model.calls[0][0] == (1, 3, 384, 384)


class FirstChannel:
    """Logits = the red channel of the view the model receives (records the views)."""

    def __init__(self):
        self.views = []

    def __call__(self, images, classes):
        self.views.append(images.clone())
        return images[:, :1].double()


def test_official_whole_image_path_matches_a_hand_computed_example():
    # red channel [[0, 4, 8], [12, 16, 20]]; padded to 4 x 4 with 100 (d = 4), resized to 2 x 2:
    # each output pixel is the mean of a 2 x 2 block -> [[8, 57], [100, 100]]. The crop [:2, :3]
    # keeps the whole 2 x 2 map; resizing it to 2 x 3 gives the columns 0, 0.5 and 1 of it.
    image = torch.zeros(3, 2, 3, dtype=torch.float64)
    image[0] = torch.tensor([[0.0, 4, 8], [12, 16, 20]])
    model = FirstChannel()
    out = whole_image_inference(model, image, None, input_size=2, activation=None,
                                size_divisibility=4, pad_value=100.0)
    canvas = torch.tensor([[0.0, 4, 8, 100], [12, 16, 20, 100], [100] * 4, [100] * 4])
    torch.testing.assert_close(model.views[0][0, 0], F.avg_pool2d(canvas[None], 2)[0].double())
    expected = torch.tensor([[[8.0, 32.5, 57.0], [100.0, 100.0, 100.0]]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # the plain resize: 2 x 3 -> 2 x 2 samples columns 0.25 and 1.75 -> [[1, 7], [13, 19]],
    # then back to 2 x 3 -> [[1, 4, 7], [13, 16, 19]]
    plain = whole_image_inference(FirstChannel(), image, None, input_size=2, activation=None,
                                  mode="resize")
    torch.testing.assert_close(plain, torch.tensor([[[1.0, 4, 7], [13, 16, 19]]],
                                                   dtype=torch.float64), rtol=0, atol=1e-12)


class QuarterResolution(PointwiseModel):
    """A per-pixel map, then 4 x 4 average pooling: 96 x 96 logits for a 384 view (as CAT-Seg)."""

    def __call__(self, images, classes):
        return F.avg_pool2d(super().__call__(images, classes), 4)


def test_the_two_whole_image_paths_differ_exactly_when_the_image_needs_padding():
    g = torch.Generator().manual_seed(4)
    model = QuarterResolution()
    aligned = torch.rand(3, 128, 192, generator=g, dtype=torch.float64) * 255  # multiples of 32
    same = [whole_image_inference(model, aligned, None, activation=None, mode=m)
            for m in ("official", "resize")]
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=1e-9)
    image = torch.rand(3, 100, 150, generator=g, dtype=torch.float64) * 255  # pads to 128 x 160
    official, plain = (whole_image_inference(model, image, None, activation=None, mode=m)
                       for m in ("official", "resize"))
    assert (official - plain).abs().max() > 0.1 * (plain.max() - plain.min())
    # the official output is the plain one of the padded canvas, cropped nowhere (the 96 x 96
    # score map is smaller than the image): the padding is stretched into the output
    canvas = pad_to_multiple(image, OFFICIAL_SIZE_DIVISIBILITY, CLIP_PIXEL_MEAN)
    assert canvas.shape == (3, 128, 160) and torch.equal(canvas[:, :100, :150], image)
    pad_colour = torch.tensor(CLIP_PIXEL_MEAN, dtype=torch.float64).view(3, 1, 1)
    assert torch.equal(canvas[:, 100:, :], pad_colour.expand(3, 28, 160))
    assert torch.equal(canvas[:, :, 150:], pad_colour.expand(3, 128, 10))
    via_canvas = whole_image_inference(model, canvas, None, activation=None, mode="resize",
                                       output_size=(100, 150))
    torch.testing.assert_close(official, via_canvas, rtol=0, atol=1e-9)


def test_padding_with_the_clip_mean_is_padding_the_normalised_image_with_zero():
    from hyro_edu.core.images import CLIP_MEAN, CLIP_STD

    mean = torch.tensor(CLIP_MEAN, dtype=torch.float64).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD, dtype=torch.float64).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(mean.flatten(), torch.tensor(CLIP_PIXEL_MEAN, dtype=torch.float64),
                               rtol=0, atol=1e-6)  # CAT-Seg's CLIP_PIXEL_MEAN is CLIP's mean

    def normalising(images, classes):  # what the segmenter does with 0-255 pixels
        weight = torch.ones(2, 3, 1, 1, dtype=torch.float64)
        return F.conv2d((images.double() - mean) / std, weight)

    image = torch.rand(3, 40, 45, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    image = image * 255
    ours = whole_image_inference(normalising, image, None, activation=None)
    # detectron2: normalise, pad with 0 to a multiple of 32, resize to 384, model without
    # normalisation, crop [:40, :45] (nothing at 384), resize to the image size
    zero_padded = F.pad((image[None] - mean) / std, (0, 64 - 45, 0, 64 - 40), value=0.0)
    logits = F.conv2d(F.interpolate(zero_padded, size=(384, 384), mode="bilinear"),
                      torch.ones(2, 3, 1, 1, dtype=torch.float64))
    official = F.interpolate(logits[..., :40, :45], size=(40, 45), mode="bilinear")[0]
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-9)


def test_whole_image_inference_rejects_bad_switches():
    with pytest.raises(ValueError, match="mode must be 'official'"):
        whole_image_inference(PointwiseModel(), torch.zeros(3, 8, 8), None, mode="padded")
    with pytest.raises(ValueError, match="pad_value must be a finite number or three"):
        whole_image_inference(PointwiseModel(), torch.zeros(3, 8, 8), None, pad_value=(1, 2))
    with pytest.raises(ValueError, match="size_divisibility must be an integer >= 1"):
        whole_image_inference(PointwiseModel(), torch.zeros(3, 8, 8), None, size_divisibility=0)


def test_resize_shortest_edge_follows_detectron2():
    assert resize_shortest_edge(torch.zeros(3, 480, 640)).shape == (3, 640, 853)   # 640 * 640 / 480 = 853.3
    assert resize_shortest_edge(torch.zeros(3, 640, 480)).shape == (3, 853, 640)
    assert resize_shortest_edge(torch.zeros(3, 100, 3000)).shape == (3, 85, 2560)  # capped: 640 * 2560 / 19200
    img = torch.full((3, 10, 20), 7, dtype=torch.uint8)
    out = resize_shortest_edge(img)
    assert out.dtype == torch.uint8 and bool((out == 7).all())


# ----------------------------------------------------------------------------
# mIoU
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_matches_torchmetrics_on_random_data(seed):
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(seed)
    num_classes = 6
    preds = [torch.randint(0, num_classes, (2, 17, 23), generator=g) for _ in range(4)]
    targets = [torch.randint(0, num_classes, (2, 17, 23), generator=g) for _ in range(4)]
    for t in targets:
        t[torch.rand(t.shape, generator=g) < 0.2] = 255
    targets[0][targets[0] == 5] = 255  # class 5 rarer, classes still all present somewhere
    metric = MeanIoU(num_classes, ignore_index=255, average="union_present")
    for p, t in zip(preds, targets):
        metric.update(p, t)
    ours = metric.compute()
    reference = MulticlassJaccardIndex(num_classes, ignore_index=255, average="macro")
    per_class = MulticlassJaccardIndex(num_classes, ignore_index=255, average="none")
    p, t = torch.cat(preds), torch.cat(targets)
    assert ours["miou"] == pytest.approx(float(reference(p, t)), abs=1e-6)
    torch.testing.assert_close(ours["iou"].float(), per_class(p, t), rtol=0, atol=1e-6)
    keep = t != 255
    assert ours["pixel_accuracy"] == pytest.approx(float((p[keep] == t[keep]).double().mean()))


def test_classes_absent_everywhere_are_left_out_of_the_mean():
    from torchmetrics.classification import MulticlassJaccardIndex

    metric = MeanIoU(4, ignore_index=255, average="union_present")
    metric.update(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 255]))
    result = metric.compute()
    # class 0: TP 1, union 2; class 1: TP 2, union 3; class 2 only predicted on an ignored pixel; class 3 absent
    assert result["iou"][:2].tolist() == [0.5, 2 / 3] and math.isnan(result["iou"][2]) and math.isnan(result["iou"][3])
    assert result["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    reference = MulticlassJaccardIndex(4, ignore_index=255, average="macro")
    assert result["miou"] == pytest.approx(float(reference(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 255]))))


def _gt_present_miou(pred, target, num_classes, ignore_index=255):
    """The oracle for detectron2 main: IoU averaged over the classes found in the labels."""
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    ious = []
    for c in range(num_classes):
        if (target == c).any():
            inter = ((pred == c) & (target == c)).sum().item()
            ious.append(inter / ((pred == c) | (target == c)).sum().item())
    return sum(ious) / len(ious)


# the fidelity audit's reproducer: classes 2 and 3 are predicted but never occur in the labels
AUDIT_GT = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1], [255, 255, 1, 1]])
AUDIT_PRED = torch.tensor([[0, 0, 0, 2], [1, 1, 1, 1], [0, 0, 1, 1], [3, 3, 1, 1]])


def test_the_default_average_is_detectron2_main_and_union_present_is_v0_6():
    from torchmetrics.classification import MulticlassJaccardIndex

    results = {}
    for average in ("gt_present", "union_present"):
        metric = MeanIoU(4, ignore_index=255, average=average)
        metric.update(AUDIT_PRED, AUDIT_GT)
        results[average] = metric.compute()
    default = MeanIoU(4, ignore_index=255)
    default.update(AUDIT_PRED, AUDIT_GT)
    assert default.average == "gt_present"
    assert default.compute()["miou"] == results["gt_present"]["miou"]
    # class 0: IoU 5/6, class 1: 8/8 -> (5/6 + 1) / 2 = 0.9167. Class 2 is predicted once, on a
    # class-0 pixel: IoU 0, a third term in the v0.6 mean -> 0.6111. Class 3 is predicted only on
    # ignored pixels, so neither mean sees it.
    oracle = _gt_present_miou(AUDIT_PRED, AUDIT_GT, 4)
    assert results["gt_present"]["miou"] == pytest.approx(oracle)
    assert results["gt_present"]["miou"] == pytest.approx((5 / 6 + 1) / 2)
    macro = MulticlassJaccardIndex(4, ignore_index=255, average="macro")
    assert results["union_present"]["miou"] == pytest.approx(float(macro(AUDIT_PRED, AUDIT_GT)))
    assert results["union_present"]["miou"] == pytest.approx((5 / 6 + 1 + 0) / 3)
    assert round(results["gt_present"]["miou"], 4) == 0.9167
    assert round(results["union_present"]["miou"], 4) == 0.6111
    iou_gt, iou_union = results["gt_present"]["iou"], results["union_present"]["iou"]
    assert math.isnan(iou_gt[2]) and iou_union[2] == 0 and math.isnan(iou_union[3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gt_present_mean_against_a_direct_oracle_and_the_order_of_the_two(seed):
    from torchmetrics.classification import MulticlassJaccardIndex

    g = torch.Generator().manual_seed(seed)
    num_classes = 9
    target = torch.randint(0, 5, (3, 20, 20), generator=g)  # classes 5..8 never in the labels
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    pred = torch.randint(0, num_classes, (3, 20, 20), generator=g)
    gt_present, union_present = MeanIoU(num_classes), MeanIoU(num_classes, average="union_present")
    for i in range(3):  # batch by batch
        gt_present.update(pred[i], target[i])
        union_present.update(pred[i], target[i])
    a, b = gt_present.compute()["miou"], union_present.compute()["miou"]
    assert a == pytest.approx(_gt_present_miou(pred, target, num_classes), abs=1e-12)
    assert b == pytest.approx(float(MulticlassJaccardIndex(
        num_classes, ignore_index=255, average="macro")(pred, target)), abs=1e-6)
    # 4 predicted-only classes add zeros: b = a * 5 / 9 exactly
    assert b == pytest.approx(a * 5 / 9, abs=1e-12) and a > b
    # predictions confined to the labelled classes: the two averages coincide
    inside = pred % 5
    both = [MeanIoU(num_classes, average=avg) for avg in ("gt_present", "union_present")]
    for m in both:
        m.update(inside, target)
    assert both[0].compute()["miou"] == both[1].compute()["miou"]


def test_miou_rejects_an_unknown_average():
    with pytest.raises(ValueError, match="average must be 'gt_present'.*got 'macro'"):
        MeanIoU(3, average="macro")


def test_scores_are_reduced_by_argmax_and_accumulation_equals_one_shot():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(3, 5, 8, 8, generator=g)
    target = torch.randint(0, 5, (3, 8, 8), generator=g)
    a, b = MeanIoU(5), MeanIoU(5)
    a.update(scores, target)
    for i in range(3):
        b.update(scores[i].argmax(0), target[i])
    assert torch.equal(a.confusion, b.confusion)
    a.reset()
    assert int(a.confusion.sum()) == 0


def test_miou_rejects_bad_labels():
    with pytest.raises(ValueError, match="ignore_index must lie outside the class range"):
        MeanIoU(10, ignore_index=3)
    metric = MeanIoU(3, ignore_index=255)
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\] or ignore_index=255, got \[7\]"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"pred class indices must be in \[0, 2\]"):
        metric.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))


def test_pas20b_collapses_every_prediction_from_20_into_background():
    pred = torch.tensor([0, 19, 20, 21, 58])
    out = collapse_background(pred)
    assert out.tolist() == [0, 19, 20, 20, 20]
    assert torch.equal(collapse_background(out), out)
    with pytest.raises(ValueError, match="num_foreground must be an integer >= 1"):
        collapse_background(pred, 0)


# ----------------------------------------------------------------------------
# class truncation
# ----------------------------------------------------------------------------
def test_at_most_256_classes_are_kept_by_their_highest_cost():
    g = torch.Generator().manual_seed(0)
    assert select_classes(torch.randn(2, 256, 4, 4, generator=g)) is None
    cost = torch.randn(2, 1, 300, 4, 4, generator=g)  # (B, P, T, H, W)
    keep = select_classes(cost)
    assert keep.shape == (2, 256) and bool((keep[:, 1:] > keep[:, :-1]).all())
    best = cost.amax(dim=(1, 3, 4))  # (B, T)
    for b in range(2):
        dropped = sorted(set(range(300)) - set(keep[b].tolist()))
        assert best[b, dropped].max() <= best[b, keep[b]].min()


def test_scatter_puts_kept_logits_back_and_fills_the_rest():
    g = torch.Generator().manual_seed(1)
    cost = torch.randn(2, 300, 3, 3, generator=g)
    keep = select_classes(cost, 256)
    kept = gather_classes(cost, keep)
    assert kept.shape == (2, 256, 3, 3)
    full = scatter_classes(kept, keep, 300)
    mask = torch.zeros(2, 300, dtype=torch.bool)
    mask.scatter_(1, keep, True)
    assert torch.equal(full[mask], cost[mask]) and bool((full[~mask] == -100).all())
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 99\]"):
        scatter_classes(kept, keep, 100)


# ----------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------
class _TinyBenchmark:
    num_classes, ignore_index, collapse_background_at = 21, 255, 20
    eval_class_names = tuple(f"name{i}" for i in range(59))

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.samples = []
        for h, w in ((40, 60),):
            label = torch.randint(0, 21, (h, w), generator=g)
            label[0] = 255
            self.samples.append({"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
                                 "label": label})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_evaluate_runs_the_protocol_with_the_vocabulary_and_the_collapse():
    ds = _TinyBenchmark()
    seen = []

    def model(images, classes):  # always votes for vocabulary entry 40, a "background" name
        seen.append(len(classes))
        logits = torch.zeros(images.shape[0], len(classes), 24, 24)
        logits[:, 40] = 5
        return logits

    result = evaluate(model, ds)
    assert set(seen) == {59} and result["num_images"] == 1
    # everything is predicted as background (20): IoU_20 = TP / (pixels labelled 20 + all other labelled pixels)
    labels = torch.cat([s["label"].flatten() for s in ds.samples])
    labels = labels[labels != 255]
    expected_iou = float((labels == 20).sum()) / labels.numel()
    assert result["miou"] == pytest.approx(expected_iou / labels.unique().numel())


class _TwoImages:
    """Labels use classes 0 and 1 only; the model below also predicts class 2."""

    num_classes, ignore_index, collapse_background_at = 3, 255, None
    eval_class_names = ("zero", "one", "two")

    def __init__(self):
        label = torch.zeros(30, 50, dtype=torch.int64)
        label[:, 25:] = 1
        image = torch.zeros(3, 30, 50, dtype=torch.uint8)
        image[0, :, 25:] = 200  # red where the label is 1
        image[1, 20:, :] = 200  # green in the bottom rows, which the model calls class 2
        self.samples = [{"image": image, "label": label}]

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.samples[i]


def _colour_model(images, classes):
    red, green = images[:, :1] / 255, images[:, 1:2] / 255
    return torch.cat([1 - red - green, red - green, 2 * green], dim=1) * 10


def test_evaluate_passes_the_average_and_the_whole_image_mode():
    ds = _TwoImages()
    results = {avg: evaluate(_colour_model, ds, average=avg)
               for avg in ("gt_present", "union_present")}
    default = evaluate(_colour_model, ds)
    assert default["average"] == "gt_present" and default["miou"] == results["gt_present"]["miou"]
    # class 2 is predicted (bottom rows) but never labelled: a third term 0 in the v0.6 mean
    assert results["union_present"]["iou"][2] == 0 and math.isnan(results["gt_present"]["iou"][2])
    assert results["union_present"]["miou"] == pytest.approx(results["gt_present"]["miou"] * 2 / 3)
    calls = []

    def recording(images, classes):
        calls.append(images.clone())
        return _colour_model(images, classes)

    evaluate(recording, ds, sliding_window=False)
    evaluate(recording, ds, sliding_window=False, whole_image_mode="resize")
    # 30 x 50 -> shortest edge 640: 640 x 1067, padded to 640 x 1088 with the CLIP mean colour
    # before the resize to 384: the right border of the official view is the pad colour
    official, plain = calls
    mean = torch.tensor(CLIP_PIXEL_MEAN).view(3, 1)
    torch.testing.assert_close(official[0, :, :, -1], mean.expand(3, 384), rtol=0, atol=1e-3)
    assert (plain[0, :, :, -1] - mean).abs().max() > 50
    with pytest.raises(ValueError, match="mode must be 'official'"):
        evaluate(_colour_model, ds, sliding_window=False, whole_image_mode="plain")
