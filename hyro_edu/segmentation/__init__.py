"""Open-vocabulary semantic segmentation (HyRo, HyperCLIP, H-CLIP on CAT-Seg): the decoder, the segmenter, evaluation and the trainer (``python -m hyro_edu.segmentation.train``)."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["catseg", "model", "evaluation", "train"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
