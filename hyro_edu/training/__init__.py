"""The training engine every system shares: configs with ``--set`` overrides (``config``), run directories, resume and interruption by SIGINT/SIGTERM (``runs``), Lightning set-up, progress and logs (``lightning``), fitting one attempt of a run with resume and interruption (``fit``), the resumable data stream, split across processes and micro-batches (``stream``), and command-line scaffolding (``cli``)."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["config", "runs", "lightning", "fit", "stream", "cli"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
