"""``python -m hyro_edu.tree_alignment.train``: train, resume or load a tree-alignment run from a shell.

Imports come in stages: ``--help`` needs only argparse; the config check (``parser.error``, exit
status 2, for every bad key or value, a dataset that is not prepared, or a run directory of another
config) needs torch but not Lightning; only training loads Lightning and the models.  Exit status
130 after SIGINT (Ctrl-C), 143 after SIGTERM, with "interrupted at step N; run the same command to
resume" on stderr.
"""
from __future__ import annotations

from typing import Optional, Sequence

from hyro_edu.training.cli import checked_config_or_exit, config_parser, train_or_exit
from hyro_edu.training.config import shipped_configs

__all__ = ["main"]

_DESCRIPTION = (
    "Train tree alignment across heterogeneous hyperbolic manifolds (MaPLe prompts, the image as a "
    "tree, learned curvatures) or one of its ablations. Without arguments: the toy config (the toy "
    "world at 64 px, the tiny CLIP, 16 shots of the 36 seen classes, CPU-sized). A finished run is "
    "loaded, an interrupted one resumed by the same command."
)
_EPILOG = """examples:
  python -m hyro_edu.tree_alignment.train
  python -m hyro_edu.tree_alignment.train --set variant=protect --set shots=1
  python -m hyro_edu.tree_alignment.train --config cifar100 --print-config
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (``parser.error`` exits with 2)."""
    parser = config_parser("python -m hyro_edu.tree_alignment.train", _DESCRIPTION,
                           configs=shipped_configs("hyro_edu.tree_alignment.configs"), default="toy",
                           epilog=_EPILOG, data_root=True)
    args = parser.parse_args(argv)

    from hyro_edu.tree_alignment.train import config as C  # torch, not Lightning

    config, directory = checked_config_or_exit(parser, args, C)
    if directory is None:  # --print-config: printed
        return 0
    from hyro_edu.core.distributed import global_rank

    if global_rank(config.devices) == 0:  # the other processes of a multi-process run stay quiet
        print(f"run {config.name!r}: {config.dataset}, variant {config.variant}, {config.shots}-shot, "
              f"{config.clip_model}, batch {config.batch_size} x {config.total_steps} steps -> {directory}", flush=True)

    from hyro_edu.tree_alignment.train import run as R  # Lightning, the model

    return train_or_exit(parser, args, config, directory, R)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
