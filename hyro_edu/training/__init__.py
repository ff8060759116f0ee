"""The training engine every system shares: configs with ``--set`` overrides (``config``), run directories, resume and interruption by SIGINT/SIGTERM (``runs``), Lightning set-up, progress and logs (``lightning``), and command-line scaffolding (``cli``)."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["config", "runs", "lightning", "cli"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
