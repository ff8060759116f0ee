r"""An open-vocabulary segmenter: a (fine-tuned) CLIP and CAT-Seg's cost-aggregation decoder.

.. math::
    z = \mathrm{CATSeg}\Big(\underbrace{\hat F^{V}(x)}_{(B, D, h, w)},\;
        \underbrace{\hat E^{L}(\text{“A photo of a } t \text{ in the scene”})}_{(1, T, 1, D)},\;
        G_{\text{shallow}}(x),\; G_{\text{deep}}(x)\Big) \in \mathbb{R}^{B \times T \times 4h \times 4w},

(one template shown; with ``P`` templates the text input is :math:`(1, T, P, D)`), where
:math:`\hat F^V` is CLIP's dense last layer (CAT-Seg's value-only final block, ``ln_post``
and the projection applied to every patch token), :math:`\hat E^L` the unit text embeddings of the
class names from the text tower, and :math:`G` the outputs of two intermediate vision blocks
(ViT-B/16: indices 3 and 7, i.e. "layers 4 and 8"), all with the attention weights
re-parametrised by one of the fine-tuning modes of :mod:`hyro_edu.clip.finetune` (``attention``,
``hyperclip``, ``rotation``, ``hyro``, ``hclip``; ``frozen`` keeps CLIP as it is).  Everything
about CLIP is frozen except the adapters; the decoder trains in full.  This is the model that
HyRo, HyperCLIP, H-CLIP and CAT-Seg share: the released code of HyperCLIP
(``SJTU-DeepVisionLab/HyperCLIP``), HyRo (``tmhoanggg/HyRo``) and the H-CLIP-style code of
``ZhaoYi-10-13/HPS-Seg`` are forks of CAT-Seg's (``cvlab-kaist/CAT-Seg``) that keep its model,
decoder and evaluation and differ only in ``MODEL.SEM_SEG_HEAD.CLIP_FINETUNE``, which is
``mode`` here.

Properties (tested in ``tests/test_seg_model.py``):

* shapes: the tiny CLIP on 64×64 images (8×8 grid) gives ``(B, T, 32, 32)``; ViT-B/16 at 384×384
  (24×24 grid) gives ``(B, T, 96, 96)``;
* the text side uses ``P`` templates per class: by default **one** (``P = 1``), CAT-Seg's
  ``"A photo of a {} in the scene"`` (:data:`CATSEG_TEMPLATE`), or CAT-Seg's ``"imagenet"``
  ensemble of the 80 CLIP ImageNet templates (:data:`PROMPT_ENSEMBLES`); the text features are
  ``(T, P, D)`` (every prompt L2-normalised) and the decoder's ``prompt_channels`` is ``P``.
  Only the **first synonym** of a name that lists synonyms separated by ``", "`` (ADE-847) is
  used, for every template (CAT-Seg's ``get_text_embeds``);
* ``clip_resolution``: the images are resized (bilinear, ``align_corners=False``) to this side
  before CLIP, as CAT-Seg's ``clip_resolution`` does (ViT-L/14@336: 384-px crops -> 336 px, a 24×24
  grid); ``None`` feeds them as they are (ViT-B/16 at 384: the official resize is the identity);
* every forward pass enters :meth:`~hyro_edu.clip.finetune.Finetuning.shared_blocks` once, so H-CLIP's
  shared blocks are computed once per pass;
* in eval mode the text embeddings of a class list are cached (CAT-Seg caches them once at
  evaluation); switching to training mode or loading weights clears the cache;
* :meth:`OpenVocabSegmenter.trainable_state_dict` holds exactly the trainable tensors (adapters
  and decoder), never the frozen CLIP.

**Images: one convention, three entry points.**  Pixels go through one pipeline, the package's
(:mod:`hyro_edu.core.images`): ``uint8`` 0-255 or floats in ``[0, 1]`` ->
:func:`~hyro_edu.core.images.to_unit_range` -> ``[0, 1]`` floats ->
:meth:`~hyro_edu.clip.backbone.ClipBackbone.normalize_images` -> the model.  Each entry point
says where in that pipeline its input is:

* :meth:`OpenVocabSegmenter.predict` -- images as they come (``uint8`` or ``[0, 1]`` floats,
  ``(B, 3, H, W)`` or ``(3, H, W)``) -> class indices ``(B, H, W)`` (or ``(H, W)``); for users;
* :meth:`OpenVocabSegmenter.forward` -- normalised float images -> logits ``(B, T, 4h, 4w)``;
  what training feeds.  Any other dtype is a ``TypeError``;
* :meth:`OpenVocabSegmenter.forward_pixels` -- 0-255 pixel values (``uint8``, or floats, which
  :func:`hyro_edu.segmentation.evaluation.sliding_window_inference` passes after its bilinear
  resizes) -> logits; ``forward(normalize_images(images / 255))``.

Size: a little over 500 lines, one concept (the segmenter, the checks of its parts, its builder).

References: :cite:`cho2024catseg` (the decoder, the dense last layer, the prompts, the guidance
blocks), :cite:`truong2026hyro`, :cite:`peng2025hyperclip`, :cite:`peng2025hclip` (the
fine-tuning modes); the released CAT-Seg code (``cvlab-kaist/CAT-Seg``:
``cat_seg/modeling/transformer/cat_seg_predictor.py`` for the prompts and text embeddings,
``cat_seg/cat_seg_model.py`` for ``clip_resolution`` and the sliding window).
"""
from __future__ import annotations

from numbers import Integral
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import nn

from hyro_edu.core import checks as _checks
from hyro_edu.core.images import to_unit_range
from hyro_edu.segmentation.catseg import PRESETS, CATSegDecoder, build_catseg_decoder
from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.clip.tiny import TINY_CLIP_NAME
from hyro_edu.clip.finetune import FinetuneConfig, Finetuning, apply_finetuning, unchanged_on_error
from hyro_edu.data.benchmarks import prompt_name  # one rule for the whole package (CAT-Seg's)

__all__ = [
    "CATSEG_TEMPLATE",
    "IMAGENET_TEMPLATES",
    "PROMPT_ENSEMBLES",
    "KNOWN_GUIDANCE_BLOCKS",
    "prompt_name",
    "default_guidance_blocks",
    "default_decoder_preset",
    "OpenVocabSegmenter",
    "build_segmenter",
]

#: CAT-Seg's single prompt template (``PROMPT_ENSEMBLE_TYPE "single"`` in the released configs,
#: ``cvlab-kaist/CAT-Seg``, ``configs/vitb_384.yaml`` and ``configs/vitl_336.yaml``).
CATSEG_TEMPLATE = "A photo of a {} in the scene"

#: The 80 prompt templates of CLIP's ImageNet zero-shot classifier (Radford et al., the
#: "Prompt_Engineering_for_ImageNet" notebook of OpenAI's CLIP repository), in that order:
#: CAT-Seg's ``IMAGENET_TEMPLATES`` (``PROMPT_ENSEMBLE_TYPE "imagenet"``, in
#: ``imagenet_templates.py``) is the same list.  Read from open_clip, which ships it
#: (``OPENAI_IMAGENET_TEMPLATES``).
IMAGENET_TEMPLATES = tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)

#: CAT-Seg's ``PROMPT_ENSEMBLE_TYPE`` values: the templates of each.
PROMPT_ENSEMBLES = {"single": (CATSEG_TEMPLATE,), "imagenet": IMAGENET_TEMPLATES}

#: The intermediate vision blocks (0-based) CAT-Seg hooks, by the number of vision blocks:
#: ViT-B/16 (12 blocks) uses 3 and 7, ViT-L/14 (24 blocks) 7 and 15 (CAT-Seg's vitb_384 and
#: vitl_336 configs).
KNOWN_GUIDANCE_BLOCKS = {12: (3, 7), 24: (7, 15)}


def default_guidance_blocks(num_layers: int) -> tuple[int, int]:
    """The two vision blocks whose outputs guide the decoder's upsampling, for a ViT of ``num_layers``.

    ``(3, 7)`` for 12 blocks and ``(7, 15)`` for 24 (CAT-Seg's choice); otherwise
    ``(num_layers // 4, num_layers // 2)``, e.g. ``(1, 2)`` for the 4-block tiny CLIP -- a shallow
    and a middle block, as CAT-Seg's are.
    """
    num_layers = _checks.integer(num_layers, "num_layers", 3)
    if num_layers in KNOWN_GUIDANCE_BLOCKS:
        return KNOWN_GUIDANCE_BLOCKS[num_layers]
    return (num_layers // 4, num_layers // 2)


def default_decoder_preset(backbone: ClipBackbone) -> str:
    """``"tiny"`` for the tiny CLIP (:data:`~hyro_edu.clip.tiny.TINY_CLIP_NAME`), ``"vit_l14"``
    for a 24-block vision tower (ViT-L), else ``"vit_b16"``.  :func:`build_segmenter` takes the
    input widths and guidance blocks from the backbone in every case; the presets differ only
    there."""
    if backbone.name == TINY_CLIP_NAME:
        return "tiny"
    return "vit_l14" if backbone.num_layers("visual") == 24 else "vit_b16"


def _class_names(class_names) -> tuple[str, ...]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) or len(class_names) == 0:
        raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}")
    bad = [n for n in class_names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"class names must be non-empty strings, got {bad[:3]!r} in class_names")
    return tuple(prompt_name(n) for n in class_names)


def _check_normalised(images) -> None:
    """``forward``'s input must be a float tensor: normalised images, not pixels."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            "images must be a float tensor (B, 3, H, W) normalised with the backbone's mean and std, "
            f"got dtype {images.dtype}; pass uint8 or [0, 1] images to predict(), 0-255 values to "
            "forward_pixels()"
        )


def _check_backbone(backbone) -> None:
    if not isinstance(backbone, ClipBackbone):
        raise ValueError(f"backbone must be a hyro_edu.clip.backbone.ClipBackbone, got {type(backbone).__name__}")


def _templates(template) -> tuple[str, ...]:
    """``template`` (one string, or a sequence of them: ``P`` templates) as a checked tuple."""
    templates = (template,) if isinstance(template, str) else template
    if isinstance(templates, bytes) or not isinstance(templates, Sequence) or not templates:
        raise ValueError(
            f"template must be a string or a non-empty list of strings, got {template!r}"
        )
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(
                f"template must contain '{{}}' exactly once for the class name, got {t!r}"
            )
    return tuple(templates)


def _check_clip_resolution(backbone: ClipBackbone, clip_resolution) -> Optional[int]:
    if clip_resolution is None:
        return None
    p = backbone.patch_size
    ok = isinstance(clip_resolution, Integral) and not isinstance(clip_resolution, bool)
    if not ok or clip_resolution < p or clip_resolution % p:
        raise ValueError(
            f"clip_resolution must be None or a positive multiple of the patch size {p}, "
            f"got {clip_resolution!r}"
        )
    return int(clip_resolution)


def _check_guidance_and_template(backbone: ClipBackbone, guidance_blocks, template) -> tuple[int, int]:
    """Validated ``(shallow, deep)`` guidance blocks (default :func:`default_guidance_blocks`)."""
    _templates(template)
    layers = backbone.num_layers("visual")
    if guidance_blocks is None:
        return default_guidance_blocks(layers)
    try:
        blocks = tuple(guidance_blocks)
    except TypeError:  # not iterable
        blocks = ()
    if len(blocks) != 2 or any(
        isinstance(b, bool) or not isinstance(b, Integral) or not 0 <= b < layers - 1 for b in blocks
    ):
        raise ValueError(
            f"guidance_blocks must be two block indices in [0, {layers - 2}] (the last block is the "
            f"dense layer), got {guidance_blocks!r}"
        )
    return tuple(int(b) for b in blocks)


def _check_decoder(backbone: ClipBackbone, decoder, prompts: int = 1) -> None:
    if not isinstance(decoder, CATSegDecoder):
        raise ValueError(f"decoder must be a hyro_edu.segmentation.catseg.CATSegDecoder, got {type(decoder).__name__}")
    if decoder.embed_dim != backbone.embed_dim or decoder.vision_width != backbone.width("visual"):
        raise ValueError(
            f"decoder must have embed_dim = {backbone.embed_dim} and vision_width = "
            f"{backbone.width('visual')} (the backbone's), got {decoder.embed_dim} and {decoder.vision_width}"
        )
    if decoder.prompt_channels != prompts:
        raise ValueError(
            f"decoder must have prompt_channels = {prompts} (one channel per prompt template), "
            f"got {decoder.prompt_channels}"
        )


def _check_parts(backbone, decoder, guidance_blocks, template) -> tuple[int, int]:
    """Every check of :class:`OpenVocabSegmenter` that does not need the fine-tuning; the blocks."""
    _check_backbone(backbone)
    blocks = _check_guidance_and_template(backbone, guidance_blocks, template)
    _check_decoder(backbone, decoder, len(_templates(template)))
    return blocks


class OpenVocabSegmenter(nn.Module):
    """ClipBackbone + :class:`~hyro_edu.clip.finetune.Finetuning` + :class:`~hyro_edu.segmentation.catseg.CATSegDecoder`.

    Build it with :func:`build_segmenter` (which applies the fine-tuning and sizes the decoder).

    Parameters
    ----------
    backbone : the CLIP, already carrying the adapters of ``finetuning``.
    finetuning : what :func:`~hyro_edu.clip.finetune.apply_finetuning` returned for ``backbone``.
    decoder : a :class:`~hyro_edu.segmentation.catseg.CATSegDecoder` with ``embed_dim`` equal to the backbone's
        joint embedding size, ``vision_width`` equal to its vision width and ``prompt_channels``
        equal to the number of templates ``P``.
    guidance_blocks : ``(shallow, deep)`` 0-based vision-block indices; default
        :func:`default_guidance_blocks`.  Neither may be the last block (that one is the dense layer).
    template : the prompt template, with ``{}`` for the class name (default
        :data:`CATSEG_TEMPLATE`), or a sequence of ``P`` templates (a prompt ensemble, e.g.
        :data:`IMAGENET_TEMPLATES`).
    cache_text : cache the text embeddings of a class list in eval mode (default True).
    clip_resolution : resize the images to this side before CLIP (CAT-Seg's ``clip_resolution``:
        336 for ViT-L/14@336); ``None`` (default) feeds them at their own size.

    Notes
    -----
    Forward: float ``images (B, 3, H, W)`` normalised with the backbone's mean/std, ``H`` and
    ``W`` multiples of the patch size (or any size with ``clip_resolution``), and
    ``class_names`` (T strings) -> logits ``(B, T, 4h, 4w)`` with ``(h, w)`` the patch grid CLIP
    sees.  :meth:`predict` takes images as they come (``uint8`` or ``[0, 1]`` floats) and returns
    class indices; :meth:`forward_pixels` takes 0-255 values (see the module docstring).
    """

    def __init__(
        self,
        backbone: ClipBackbone,
        finetuning: Finetuning,
        decoder: CATSegDecoder,
        *,
        guidance_blocks: Optional[Sequence[int]] = None,
        template: Union[str, Sequence[str]] = CATSEG_TEMPLATE,
        cache_text: bool = True,
        clip_resolution: Optional[int] = None,
    ):
        super().__init__()
        _check_backbone(backbone)
        if not isinstance(finetuning, Finetuning):
            raise ValueError(f"finetuning must be a hyro_edu.clip.finetune.Finetuning, got {type(finetuning).__name__}")
        blocks = _check_parts(backbone, decoder, guidance_blocks, template)
        # Registration order matters: named_parameters() de-duplicates shared tensors under the
        # first name it meets, so the adapters are named "finetuning.*", not "backbone.*".
        self.finetuning = finetuning
        self.decoder = decoder
        self.backbone = backbone
        self.guidance_blocks = tuple(int(b) for b in blocks)
        self.templates = _templates(template)
        self.clip_resolution = _check_clip_resolution(backbone, clip_resolution)
        self.cache_text = bool(cache_text)
        self._text_cache: dict = {}

    # -- text -------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.finetuning.config.mode

    @property
    def template(self) -> str:
        """The template when there is one (``P = 1``); see ``templates`` for all of them."""
        if len(self.templates) != 1:
            raise AttributeError(
                f"this segmenter has P = {len(self.templates)} templates: use .templates"
            )
        return self.templates[0]

    @property
    def prompt_channels(self) -> int:
        """``P``, the number of templates per class (the decoder's ``prompt_channels``)."""
        return len(self.templates)

    def prompts(self, class_names: Sequence[str]) -> list[str]:
        """The prompts the text tower sees: ``T·P`` strings, class by class (class ``t``, template
        ``p`` at index ``t·P + p``); one per class when ``P = 1``."""
        return [t.format(n) for n in _class_names(class_names) for t in self.templates]

    def text_embeddings(self, class_names: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings ``(T, P, D)`` of the prompts, each prompt normalised on its own
        (cached in eval mode when ``cache_text``)."""
        prompts = tuple(self.prompts(class_names))
        use_cache = self.cache_text and not self.training
        if use_cache and prompts in self._text_cache:
            return self._text_cache[prompts]
        with self.finetuning.shared_blocks():
            text = self.backbone.encode_text(list(prompts), normalize=True)
        text = text.reshape(len(prompts) // self.prompt_channels, self.prompt_channels, -1)
        if use_cache:
            self._text_cache[prompts] = text.detach()
        return text

    def clear_text_cache(self) -> None:
        """Forget cached text embeddings (done automatically by ``train()`` and weight loading)."""
        self._text_cache.clear()

    def train(self, mode: bool = True):
        if mode:
            self.clear_text_cache()
        return super().train(mode)

    # -- image ------------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(dense (B, D, h, w), shallow (B, C, h, w), deep (B, C, h, w))`` in one vision pass."""
        with self.finetuning.shared_blocks():
            feats = self.backbone.forward_visual(images, blocks=self.guidance_blocks, dense=True)
        h, w = feats.grid
        maps = [
            feats.blocks[i][:, 1:].transpose(1, 2).reshape(images.shape[0], -1, h, w) for i in self.guidance_blocks
        ]
        return feats.dense_map(), maps[0], maps[1]

    # -- forward ----------------------------------------------------------------------------
    def clip_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` as CLIP sees them: resized to ``clip_resolution`` squared when it is set
        (bilinear, ``align_corners=False``, as CAT-Seg resizes its normalised ``clip_images``)."""
        side = self.clip_resolution
        if side is None or tuple(images.shape[-2:]) == (side, side):
            return images
        return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """Logits ``(B, T, 4h, 4w)`` for normalised float ``images (B, 3, H, W)`` and ``T`` class names.

        ``images`` are what :meth:`~hyro_edu.clip.backbone.ClipBackbone.normalize_images` returns
        for ``[0, 1]`` images; any other dtype (``uint8`` pixels, integers) raises ``TypeError``:
        use :meth:`predict` or :meth:`forward_pixels` for those.
        """
        names = _class_names(class_names)
        _check_normalised(images)
        with self.finetuning.shared_blocks():  # H-CLIP: one evaluation of the shared blocks per pass
            text = self.text_embeddings(names)
            dense, shallow, deep = self.image_features(self.clip_input(images))
        return self.decoder(dense, text[None].to(dense.dtype), shallow, deep)

    def forward_pixels(self, images: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """Logits ``(B, T, 4h, 4w)`` for ``images (B, 3, H, W)`` with 0-255 pixel values.

        ``uint8``, or floats on the 0-255 scale (what
        :func:`~hyro_edu.segmentation.evaluation.sliding_window_inference` passes after resizing;
        their dtype is kept).  Computes ``forward(normalize_images(images / 255))``.  Other dtypes
        raise ``TypeError``.
        """
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            unit = to_unit_range(images)
        elif isinstance(images, torch.Tensor) and images.is_floating_point():
            unit = images / 255.0
        else:
            got = f"dtype {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(
                f"images must be a uint8 or float tensor (B, 3, H, W) with 0-255 pixel values, got {got}"
            )
        return self(self.backbone.normalize_images(unit.to(self.backbone.device)), class_names)

    def predict(
        self,
        images: torch.Tensor,
        class_names: Sequence[str],
        *,
        output_size: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        """Per-pixel class indices for images as they come: ``uint8`` (0-255) or floats in ``[0, 1]``.

        ``images``: ``(B, 3, H, W)`` or one image ``(3, H, W)``, converted by
        :func:`~hyro_edu.core.images.to_unit_range` (floats outside ``[0, 1]`` raise
        ``ValueError``, other dtypes ``TypeError``) and normalised with the backbone's mean and std.
        The logits ``(B, T, 4h, 4w)`` of :meth:`forward` are resized bilinearly
        (``align_corners=False``) to ``output_size`` (default the input's ``(H, W)``) and the
        argmax over the ``T`` classes is taken: returns ``int64`` indices into ``class_names``,
        ``(B, H, W)``, or ``(H, W)`` for one image.  Runs in eval mode without gradients; the
        module's train/eval mode is restored afterwards.
        """
        unit = to_unit_range(images)
        single = unit.dim() == 3
        if single:
            unit = unit[None]
        if unit.dim() != 4 or unit.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
        size = tuple(unit.shape[-2:]) if output_size is None else tuple(
            _checks.integers(output_size, "output_size", 2))
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                logits = self(self.backbone.normalize_images(unit.to(self.backbone.device)), class_names)
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        finally:
            if was_training:
                self.train()
        labels = logits.argmax(dim=1)
        return labels[0] if single else labels

    # -- trainable state --------------------------------------------------------------------
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every trainable tensor, each once (``finetuning.*``, ``decoder.*``)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable parameters and the decoder's buffers; nothing of the frozen CLIP."""
        names = {n for n, _ in self.trainable_named_parameters()}
        return {
            k: v for k, v in self.state_dict().items() if k in names or (k.startswith("decoder.") and k not in names)
        }

    def load_trainable_state_dict(self, state: dict) -> None:
        """Load what :meth:`trainable_state_dict` returned; its keys must match exactly."""
        expected = set(self.trainable_state_dict())
        got = set(state)
        if got != expected:
            missing, unexpected = sorted(expected - got)[:5], sorted(got - expected)[:5]
            raise ValueError(
                f"state must hold exactly the trainable tensors of this segmenter (mode {self.mode!r}); "
                f"missing {missing}, unexpected {unexpected}"
            )
        self.load_state_dict(state, strict=False)
        self.clear_text_cache()

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters: ``clip`` (the adapters), ``decoder`` and ``total``."""
        clip = sum(p.numel() for n, p in self.trainable_named_parameters() if n.startswith("finetuning."))
        decoder = sum(p.numel() for n, p in self.trainable_named_parameters() if n.startswith("decoder."))
        return {"clip": clip, "decoder": decoder, "total": clip + decoder}

    def extra_repr(self) -> str:
        p = len(self.templates)
        first = self.templates[0] if p == 1 else f"{p} templates"
        return (f"mode={self.mode!r}, guidance_blocks={self.guidance_blocks}, template={first!r}, "
                f"clip_resolution={self.clip_resolution}")


def build_segmenter(
    backbone: ClipBackbone,
    finetune: Union[FinetuneConfig, str] = "hyro",
    *,
    decoder: Optional[str] = None,
    decoder_overrides: Optional[dict] = None,
    guidance_blocks: Optional[Sequence[int]] = None,
    template: Union[str, Sequence[str]] = CATSEG_TEMPLATE,
    clip_resolution: Optional[int] = None,
) -> OpenVocabSegmenter:
    """Fine-tune ``backbone`` as ``finetune`` says and attach a CAT-Seg decoder sized for it.

    ``finetune`` : a :class:`~hyro_edu.clip.finetune.FinetuneConfig` or a mode name (one of
    :data:`~hyro_edu.clip.finetune.MODES`); block sizes left ``None`` follow the backbone
    (:func:`~hyro_edu.clip.finetune.default_block_sizes`), so ``build_segmenter(backbone, mode)``
    works for any CLIP, the tiny one included.
    ``decoder`` : a preset of :data:`hyro_edu.segmentation.catseg.PRESETS` (default
    :func:`default_decoder_preset`); ``embed_dim``, ``vision_width``, ``intermediate_layers`` and
    ``prompt_channels`` (the number of templates) are set from the backbone and ``template``,
    ``decoder_overrides`` changes anything else.
    ``template`` : one template or a sequence of ``P`` (e.g. ``PROMPT_ENSEMBLES["imagenet"]``).
    ``clip_resolution`` : see :class:`OpenVocabSegmenter`.
    ``backbone`` is modified in place (frozen, adapters registered), but only after the decoder,
    ``guidance_blocks`` and ``template`` passed their checks, and inside
    :func:`~hyro_edu.clip.finetune.unchanged_on_error`: any exception leaves the backbone as it
    was (``requires_grad`` flags, parametrizations, train/eval modes), so the call can simply be
    repeated with the argument fixed.
    """
    # Everything that can be wrong with the arguments is checked before apply_finetuning changes
    # the backbone in place (freezes it, registers adapters), and what fails after it is undone
    # (unchanged_on_error): a failed call leaves the backbone as it was.
    _check_backbone(backbone)
    if isinstance(finetune, str):
        finetune = FinetuneConfig(mode=finetune)
    if not isinstance(finetune, FinetuneConfig):
        raise ValueError(
            f"finetune must be a FinetuneConfig or a mode name, got {type(finetune).__name__}"
        )
    preset = default_decoder_preset(backbone) if decoder is None else decoder
    if preset not in PRESETS:
        raise ValueError(f"decoder must be one of {tuple(PRESETS)}, got {preset!r}")
    blocks = _check_guidance_and_template(backbone, guidance_blocks, template)
    templates = _templates(template)
    _check_clip_resolution(backbone, clip_resolution)
    kwargs = dict(embed_dim=backbone.embed_dim, vision_width=backbone.width("visual"),
                  intermediate_layers=blocks, prompt_channels=len(templates))
    kwargs.update(decoder_overrides or {})
    dec = build_catseg_decoder(preset, **kwargs).to(backbone.device)
    _check_decoder(backbone, dec, len(templates))
    with unchanged_on_error(backbone):
        ft = apply_finetuning(backbone, finetune)
        return OpenVocabSegmenter(backbone, ft, dec, guidance_blocks=blocks, template=templates,
                                  clip_resolution=clip_resolution)
