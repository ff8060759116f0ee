"""Command-line scaffolding for the systems' ``python -m ...`` trainers.

:func:`config_parser` builds the common options (``--config``, ``--set KEY=VALUE``, ``--root``,
``--retrain``, ``--print-config``, the placement shortcuts ``--devices``, ``--num-nodes``,
``--strategy`` and ``--accumulate-grad-batches`` -- the same as ``--set devices=N`` and so on,
:class:`hyro_edu.training.config.DistributedConfig` -- and ``--data-root`` where asked); nothing heavy is imported to
build it, so ``--help`` answers at once.  :func:`parse_or_exit` turns every
``ValueError``/``TypeError`` raised while reading and checking the config into ``parser.error``
(status 2, the message names the key and the allowed values) -- before torch, Lightning or any
model loads; :func:`hyro_edu.training.cli.load_or_exit` and
:func:`hyro_edu.training.cli.run_dir_or_exit` apply it to reading the config and to checking its
run directory, and :func:`hyro_edu.training.cli.print_config` answers ``--print-config``;
:func:`hyro_edu.training.cli.checked_config_or_exit` does all three for a system's config module, and
:func:`hyro_edu.training.cli.train_or_exit` trains and prints the summary and the metrics.
:func:`run_or_exit` runs the training and turns
:class:`~hyro_edu.training.runs.TrainingInterrupted` into the message "interrupted at step N; run
the same command to resume" on stderr and the exit status 130 (SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

from hyro_edu.training.runs import RunConflict, TrainingInterrupted

__all__ = ["config_parser", "overrides_of", "parse_or_exit", "load_or_exit", "print_config", "run_dir_or_exit",
           "run_or_exit", "checked_config_or_exit", "train_or_exit"]

T = TypeVar("T")


def config_parser(prog: str, description: str, *, configs: Sequence[str], default: str,
                  epilog: str = "", data_root: bool = False) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the options every trainer shares (``configs``: the shipped config
    names, ``default`` the one used without ``--config``); ``data_root`` adds ``--data-root``."""
    parser = argparse.ArgumentParser(prog=prog, description=textwrap.fill(description, 79),
                                     epilog=epilog or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None,
                        help=f"a YAML file or a shipped config name ({', '.join(configs)}); default: {default}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable; the value is read as YAML), "
                             "e.g. --set mode=hyperclip --set max_steps=100 --set eval_data=[voc20,voc20b]")
    parser.add_argument("--root", default=None, help="runs directory (default $HYRO_EDU_CHECKPOINTS)")
    parser.add_argument("--retrain", action="store_true",
                        help="ignore and overwrite an existing result and checkpoint of this run name")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    placement = parser.add_argument_group(
        "devices", "where the run trains (the same as --set KEY=VALUE; batch_size stays the global batch of a step, "
        "each process reads batch_size / (devices x num_nodes x accumulate_grad_batches) per micro-batch)")
    placement.add_argument("--devices", type=int, default=None, metavar="N",
                           help="processes (GPUs) per node (--set devices=N)")
    placement.add_argument("--num-nodes", type=int, default=None, metavar="N",
                           help="machines (--set num_nodes=N)")
    placement.add_argument("--strategy", default=None, metavar="NAME",
                           help="'auto' or 'ddp' (--set strategy=NAME)")
    placement.add_argument("--accumulate-grad-batches", type=int, default=None, metavar="N",
                           help="micro-batches per optimiser step (--set accumulate_grad_batches=N)")
    if data_root:
        parser.add_argument("--data-root", default=None, help="prepared datasets (default $HYRO_EDU_DATA)")
    return parser


def parse_or_exit(parser: argparse.ArgumentParser, check: Callable[[], T]) -> T:
    """``check()``, with a ``ValueError``/``TypeError`` reported by ``parser.error`` (exit status 2)."""
    try:
        return check()
    except RunConflict as err:
        parser.error(str(err))
    except (ValueError, TypeError) as err:
        parser.error(str(err))


_PLACEMENT = (("devices", "devices"), ("num_nodes", "num_nodes"), ("strategy", "strategy"),
              ("accumulate_grad_batches", "accumulate_grad_batches"))


def overrides_of(args: argparse.Namespace) -> list[str]:
    """``args.overrides`` followed by ``key=value`` for each placement shortcut given
    (``--devices 2`` is ``--set devices=2``)."""
    out = list(getattr(args, "overrides", []) or [])
    for attr, key in _PLACEMENT:
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def load_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace, load_config: Callable) -> Any:
    """The resolved config ``load_config(args.config, overrides).resolved()``, ``overrides`` from
    :func:`hyro_edu.training.cli.overrides_of`; every error in it is reported by ``parser.error``
    (exit status 2, :func:`hyro_edu.training.cli.parse_or_exit`)."""
    return parse_or_exit(parser, lambda: load_config(args.config, overrides_of(args)).resolved())


def print_config(config) -> int:
    """Print ``config.to_dict()`` as YAML, in field order (the answer to ``--print-config``); returns 0."""
    import yaml

    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def run_dir_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace, config,
                    run_dir: Callable[..., Path], check_run_dir: Callable[..., Path]) -> Path:
    """``run_dir(config, args.root)``; unless ``--retrain``, ``check_run_dir(config, args.root)``
    first reports a directory of another config by ``parser.error`` (exit status 2)."""
    directory = run_dir(config, args.root)
    if not args.retrain:
        parse_or_exit(parser, lambda: check_run_dir(config, args.root))
    return directory


def run_or_exit(parser: argparse.ArgumentParser, work: Callable[[], int]) -> int:
    """``work()``; an interruption prints its message on stderr and returns ``128 + signal``; a
    :class:`~hyro_edu.training.runs.RunConflict` found late (an old run without ``run.json``) is
    reported by ``parser.error``."""
    try:
        return work()
    except TrainingInterrupted as err:
        from hyro_edu.core.distributed import global_rank

        sys.stdout.flush()
        if global_rank() == 0:  # the other processes of a multi-process run stop with it, quietly
            print(f"\n{err.message()}", file=sys.stderr, flush=True)
        return err.exit_code
    except RunConflict as err:
        parser.error(str(err))



def checked_config_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace,
                           config_module: Any) -> tuple[Any, Optional[Path]]:
    """``(config, run directory)``: the config read by ``config_module.load_config``
    (:func:`hyro_edu.training.cli.load_or_exit`), its data checked (``config_module.check_data``) and
    its run directory (:func:`hyro_edu.training.cli.run_dir_or_exit` with ``config_module.run_dir``
    and ``config_module.check_run_dir``); every error by ``parser.error``.  With ``--print-config``
    the config is printed instead (:func:`hyro_edu.training.cli.print_config`) and the directory is
    ``None``: nothing is checked."""
    config = load_or_exit(parser, args, config_module.load_config)
    if args.print_config:
        print_config(config)
        return config, None
    parse_or_exit(parser, lambda: config_module.check_data(config, args.data_root))
    return config, run_dir_or_exit(parser, args, config, config_module.run_dir, config_module.check_run_dir)


def train_or_exit(parser: argparse.ArgumentParser, args: argparse.Namespace, config, directory: Path,
                  run: Any) -> int:
    """Train ``config`` with ``run.train`` (``run``: a system's ``run`` module, which also has
    ``format_summary`` and ``format_metrics``), print the summary, the metrics and where
    ``metrics.json`` is; interruptions and late conflicts as :func:`hyro_edu.training.cli.run_or_exit`."""
    def work() -> int:
        result = run.train(config, root=args.root, data_root=args.data_root, retrain=args.retrain)
        from hyro_edu.training.fit import is_global_zero

        if not is_global_zero():  # the other processes of a multi-process run stay quiet
            return 0
        print(run.format_summary(result))
        if result["metrics"]:
            print(run.format_metrics(result["metrics"]))
        print(f"metrics: {directory / 'metrics.json'}")
        return 0

    return run_or_exit(parser, work)
