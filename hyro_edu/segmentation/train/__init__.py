r"""Training an open-vocabulary segmenter with Lightning: one code path, toy world or COCO-Stuff.

The objective is a pixel-wise loss between the upsampled logits and the labels over the
*training* vocabulary,

.. math::
    \min_{\phi,\ \psi}\ \mathbb E_{(x, y)}\ \mathcal L\big(
        \mathrm{CATSeg}_\psi(\mathrm{CLIP}_{\phi}(x),\ \mathrm{CLIP}_{\phi}(\text{names})),\ y\big),

where :math:`\psi` is the decoder and :math:`\phi` the fine-tuning parameters of one of the six
modes of :mod:`hyro_edu.clip.finetune` (CLIP's own weights stay frozen; ``frozen`` trains no
:math:`\phi` at all), and :math:`\mathcal L` is chosen by ``loss``: ``"bce"``, CAT-Seg's per-class
binary cross-entropy over all classes with ignored pixels as all-negative
(:func:`hyro_edu.segmentation.catseg.catseg_loss`, what the CAT-Seg, HyperCLIP and HyRo code trains with), or
``"ce"``, the pixel-wise softmax cross-entropy that ignores label 255 which the HyRo paper states
(:func:`hyro_edu.segmentation.catseg.pixel_cross_entropy`).  The optimiser follows the official code
(``train_net.py``'s ``build_optimizer`` and the released configs): AdamW with two learning-rate
groups -- the decoder at ``lr`` and everything inside CLIP (the adapters) at
``lr × clip_lr_multiplier`` -- weight decay except on normalisation layers, gradient clipping of the full-model L2 norm, and a cosine schedule (detectron2's
``WarmupCosineLR``: :math:`\eta_t = \eta\,\tfrac12(1 + \cos(\pi t / T))` after a linear warm-up).
Mixed precision (``precision="bf16-mixed"`` or ``"16-mixed"``) runs CLIP and the decoder in half
precision while the hyperbolic maps compute in fp32 (:func:`hyro_edu.core.numerics.fp32_math`).
``matmul_precision`` is passed to ``torch.set_float32_matmul_precision`` when :func:`train`
starts (and restored when it returns): the official ``train_net.py`` sets ``"high"`` (TF32 matrix
products on Ampere and newer GPUs; no effect on a CPU).

Two presets fill every value a config leaves unset (``None``):

===========================  ==============================  ==================================
value                        ``paper`` (HyRo paper)          ``official`` (released code)
===========================  ==============================  ==================================
curvature ``c`` text/vision  0.01 / 0.01                     1.0 / 0.01
block of S (hyro)            256                             128
block of R                   256                             256
batch × iterations           8 × 40,000                      4 × 80,000
adapter lr                   2e-4 ("hyperbolic lr")          2e-4 × mode multiplier
CLIP-weight lr (attention)   1e-6                            2e-4 × 0.01 = 2e-6
loss                         ``ce`` (softmax CE)             ``bce`` (CAT-Seg's BCE)
===========================  ==============================  ==================================

The official multipliers are per released config: CAT-Seg 0.01, HyperCLIP 0.075, HyRo 0.025
(also used for ``rotation``, HyRo's ablation), H-CLIP 0.01; ``frozen`` trains nothing inside CLIP,
so its multiplier (defined in both presets) is read by no parameter.  The paper states neither
gradient clipping, precision nor augmentation; the ``paper`` preset keeps the official values
(clip 0.01, fp32 with ``matmul_precision="high"``, the augmentation below).

Data: ``train_data="toy"`` trains on :class:`hyro_edu.data.toyworld.ToyPixelDataset` scenes of the
*seen* classes with the seen names as vocabulary (pixels of no object are ignored, label 255, as
the unlabelled pixels of the benchmarks are); ``"coco_stuff"`` trains on the prepared
COCO-Stuff-171 train split with CAT-Seg's augmentation (:class:`CocoStuffTrainData`): shortest
edge 384 (``train_resize``: ``"pil"``, the official uint8 PIL resize, or ``"torch"``, the earlier
float resize), a random crop of at most 384², detectron2's ``ColorAugSSDTransform``
(``color_aug="ssd"``; ``"legacy"`` is the earlier always-on stand-in, ``"none"`` switches it off),
a horizontal flip and padding to 384² (pixel 128, label 255).  Evaluation on the toy world uses
all 54 names and reports the mIoU over seen and over unseen classes (object pixels only); on the
benchmarks it runs the official protocol (:func:`hyro_edu.segmentation.evaluation.evaluate`).  With
``val_every`` the run also validates every ``val_every`` steps on ``val_data`` without the
sliding window and with the training pooling (CAT-Seg's in-training validation, its issue #35),
logging ``val/miou``.

Runs live in ``$HYRO_EDU_CHECKPOINTS/<name>/`` (:func:`~hyro_edu.segmentation.train.config.run_dir`): ``checkpoints/last.ckpt``
(saved every ``checkpoint_every`` steps; holds only the trainable tensors, the optimiser,
the scheduler and the config), ``logs/csv/version_<attempt>/metrics.csv`` (and
``logs/tensorboard/`` when ``tensorboard`` is installed; a resumed run starts a new version)
``run.json`` (the config and its key: the directory belongs to that config),
``metrics.json`` (the evaluation metrics in percent) and ``result.pt`` (the final trainable state
and metrics, written atomically last).
:func:`train` loads ``result.pt`` when it exists ("load if present, else train"), resumes from
``last.ckpt`` after an interruption, and refuses a run directory of another config (pass
``retrain=True`` / ``--retrain``, or choose a new ``name``).  SIGINT (Ctrl-C) and SIGTERM stop
after the current step with a checkpoint of that step: :func:`train` raises
:class:`~hyro_edu.training.runs.TrainingInterrupted` (a ``KeyboardInterrupt``), the command line
prints "interrupted at step N; run the same command to resume" and exits with 130 or 143.  The data
stream depends only on ``(seed, step)``, so a resumed run sees the batches the uninterrupted run
would have seen and ends with the same weights.  Before a full run (not the toy world) starts,
:func:`format_estimate` prints a time and memory estimate scaled from a *published* figure
(HyperCLIP's training log), not from a measurement of ours.  Several GPUs or machines
(``devices``, ``num_nodes``, ``strategy``, ``accumulate_grad_batches``;
:class:`hyro_edu.training.config.DistributedConfig`) train data-parallel with Lightning's
``ddp``: ``batch_size`` stays the global batch of a step, split across the processes and
micro-batches so that every step reads the images of the one-process run; the evaluation is
split across the processes too (the confusion matrices are summed).

Command line (defaults: the embedded toy config, no download)::

    python -m hyro_edu.segmentation.train                              # toy world, tiny CLIP, hyro
    python -m hyro_edu.segmentation.train --config official_vitb16 --set mode=hyperclip
    python -m hyro_edu.segmentation.train --config official_vitb16 --estimate
    python -m hyro_edu.segmentation.train --config path/to/my.yaml --eval-only
    python -m hyro_edu.segmentation.train --config official_vitb16 --set devices=4 --set strategy=ddp

References: CAT-Seg :cite:`cho2024catseg`; HyRo :cite:`truong2026hyro`; HyperCLIP
:cite:`peng2025hyperclip` and H-CLIP :cite:`peng2025hclip`; detectron2 (``ColorAugSSDTransform``,
``ResizeShortestEdge``).

The package (built on the shared engine :mod:`hyro_edu.training`): :mod:`.config`
(:class:`SegTrainConfig`, presets, the estimate), :mod:`.data` (the resumable stream, toy and
COCO-Stuff data), :mod:`.task` (the Lightning task, optimiser, evaluation), :mod:`.run`
(:func:`train`, :func:`load_result`, :func:`load_trained`) and ``__main__`` (the command line).
Every name below is importable from here; the submodules load on first use (PEP 562), so
``python -m hyro_edu.segmentation.train --help`` imports neither torch nor Lightning.
"""
from __future__ import annotations

from hyro_edu.core.lazy import lazy_names

#: Where each public name lives.
_HOMES = {
    "config": ("PRESETS", "OFFICIAL_CLIP_MULTIPLIERS", "PAPER_CLIP_MULTIPLIERS", "COLOR_AUGS",
               "TRAIN_RESIZES", "PRECISIONS", "MATMUL_PRECISIONS", "PUBLISHED_STEP_REFERENCE",
               "SegTrainConfig", "available_configs", "load_config", "run_dir", "check_run_dir",
               "estimate_run", "format_estimate"),
    "data": ("ResumableSampler", "ToySegmentationData", "shortest_edge_size", "resize_for_training",
             "rgb_to_hsv_opencv", "hsv_to_rgb_opencv", "ColorAugSSD", "CocoStuffTrainData"),
    "task": ("cosine_lambda", "parameter_groups", "SegmentationTask", "SegmentationDataModule",
             "build_model", "build_task", "evaluate_toy", "evaluate_benchmarks"),
    "run": ("SimulatedInterruption", "TrainingInterrupted", "RunConflict", "train", "load_result", "load_trained",
            "evaluate_config", "metrics_record", "format_metrics", "format_summary", "write_metrics"),
    "__main__": ("main",),
}
__all__ = [name for names in _HOMES.values() for name in names]
__getattr__, __dir__ = lazy_names(__name__, _HOMES, submodules=("config", "data", "task", "run"), public=__all__)
