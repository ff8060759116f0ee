"""CLIP (book part III): the backbone behind one interface, its weights and cache, the tiny CLIP and its pretraining, and the fine-tuning modes."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["backbone", "weights", "tiny", "pretraining", "finetune"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
