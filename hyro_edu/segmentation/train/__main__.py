"""``python -m hyro_edu.segmentation.train``: train, resume, load or evaluate a run from a shell.

Imports come in three stages so that each answer comes as early as it can: ``--help`` needs only
argparse; the config check (``parser.error``, exit status 2, for every bad key or value and for a
run directory of another config) needs torch and open_clip but not Lightning; only training and
evaluation load Lightning and the models.  Exit status 130 after SIGINT (Ctrl-C), 143 after
SIGTERM, with "interrupted at step N; run the same command to resume" on stderr.
"""
from __future__ import annotations

from typing import Optional, Sequence

from hyro_edu.training.cli import (config_parser, load_or_exit, parse_or_exit, print_config, run_dir_or_exit,
                                   run_or_exit)
from hyro_edu.training.config import shipped_configs

__all__ = ["main"]

_DESCRIPTION = (
    "Train an open-vocabulary segmenter (CAT-Seg decoder + a CLIP fine-tuning mode). Without "
    "arguments: the embedded toy config (tiny CLIP, toy world, CPU-sized). A finished run is "
    "loaded, an interrupted one resumed by the same command."
)
_EPILOG = """examples:
  python -m hyro_edu.segmentation.train
  python -m hyro_edu.segmentation.train --config official_vitb16 --set mode=hyperclip
  python -m hyro_edu.segmentation.train --config official_vitb16 --estimate
  python -m hyro_edu.segmentation.train --config path/to/my.yaml --eval-only
  python -m hyro_edu.segmentation.train --config official_vitb16 --devices 4 --strategy ddp
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (``parser.error`` exits with 2)."""
    parser = config_parser("python -m hyro_edu.segmentation.train", _DESCRIPTION,
                           configs=shipped_configs("hyro_edu.segmentation.configs"), default="toy",
                           epilog=_EPILOG, data_root=True)
    parser.add_argument("--eval-only", action="store_true", help="evaluate the finished run of this config")
    parser.add_argument("--estimate", action="store_true",
                        help="print the time and memory estimate (scaled from a published figure) and exit")
    args = parser.parse_args(argv)

    from hyro_edu.segmentation.train import config as C  # torch and open_clip, not Lightning

    config = load_or_exit(parser, args, C.load_config)
    if args.print_config:
        return print_config(config)
    if args.estimate:
        print(C.format_estimate(config))
        return 0
    directory = run_dir_or_exit(parser, args, config, C.run_dir, C.check_run_dir)
    from hyro_edu.core.distributed import global_rank

    quiet = global_rank(config.devices) != 0  # the other processes of a multi-process run
    if not quiet:
        placement = "" if config.world_size == 1 and config.accumulate_grad_batches == 1 else (
            f" ({config.world_size} processes x {config.accumulate_grad_batches} micro-batches of "
            f"{config.per_device_batch_size})")
        print(f"run {config.name!r}: mode {config.mode}, preset {config.preset}, {config.model} ({config.pretrained}), "
              f"{config.train_data} data, batch {config.batch_size}{placement} x {config.max_steps} steps -> "
              f"{directory}", flush=True)

    from hyro_edu.segmentation.train import run as R  # Lightning, the segmenter

    if args.eval_only:
        result = parse_or_exit(parser, lambda: R.load_result(config, args.root))
        if result is None:
            parser.error(f"no finished run at {directory / 'result.pt'}; train first (without --eval-only)")
        metrics = R.evaluate_config(R.load_trained(result), config, data_root=args.data_root)
        print(R.format_metrics(metrics))
        print(f"metrics written to {R.write_metrics(directory, config, {**result, 'metrics': metrics})}")
        return 0

    def work() -> int:
        result = R.train(config, root=args.root, data_root=args.data_root, retrain=args.retrain)
        if quiet or not R.is_global_zero():
            return 0
        print(f"{R.format_summary(result)}; trainable parameters {result['parameter_counts']}")
        for step, miou in result.get("validations", []):
            print(f"validation at step {step}: mIoU {100 * miou:.1f} % ({config.val_data})")
        if result["metrics"]:
            print(R.format_metrics(result["metrics"]))
        metrics_file = directory / "metrics.json"
        if metrics_file.is_file():
            print(f"metrics: {metrics_file}")
        return 0

    return run_or_exit(parser, work)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
