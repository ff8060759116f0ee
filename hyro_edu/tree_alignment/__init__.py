r"""Tree alignment across heterogeneous hyperbolic manifolds (:cite:`wu2026modality`): the method's pieces.

* :mod:`hyro_edu.tree_alignment.prompts`: MaPLe prompt learning (:cite:`khattak2023maple`) on an
  open_clip CLIP, with the visual class tokens of chosen layers;
* :mod:`hyro_edu.tree_alignment.features`: semantic-aware visual features (the class tokens of
  chosen layers carried to the output space) and the text-guided cross-attention;
* :mod:`hyro_edu.tree_alignment.manifolds`: learnable image and text curvatures, the intermediate
  curvature found by golden-section search (:mod:`hyro_edu.geometry.intermediate_curvature`), the
  ``curv_version`` options and the paper's ablation variants;
* :mod:`hyro_edu.tree_alignment.alignment`: intra-modal entailment along each tree path and
  cross-modal entailment on the intermediate manifold;
* :mod:`hyro_edu.tree_alignment.model`: the whole method and its ablation variants
  (:class:`hyro_edu.tree_alignment.model.TreeAlignmentModel`): per-node scores and the loss
  :math:`w_{\rm mta}\mathcal L_{\rm DTL} + \lambda\mathcal L_{\rm NCL} + \alpha L_{\rm align}`;
* :mod:`hyro_edu.tree_alignment.train`: the Lightning trainer, the toy config and one config per
  paper setting (``python -m hyro_edu.tree_alignment.train``).

ProTeCt's taxonomic machinery (trees with depth-first ids, tree cuts, NCL and DTL, the LA / HCA /
MTA metrics) lives in :mod:`hyro_edu.hierarchy`.  The full-size datasets are prepared by
``python -m data_scripts.prepare --datasets tree_alignment`` and read by
:mod:`hyro_edu.data.taxonomic_datasets`, which the trainer uses
(:mod:`hyro_edu.tree_alignment.train.data`).  Curvature ``-c``, ``c > 0``, throughout.
"""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["prompts", "features", "manifolds", "alignment", "model", "train", "configs"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
