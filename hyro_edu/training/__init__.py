"""The training engine every system shares: configs with ``--set`` overrides, run directories, resume, interruption (SIGINT/SIGTERM), Lightning set-up and logs."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["lightning"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
