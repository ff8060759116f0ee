"""Command-line scaffolding for the systems' ``python -m ...`` trainers.

:func:`config_parser` builds the common options (``--config``, ``--set KEY=VALUE``, ``--root``,
``--retrain``, ``--print-config``); nothing heavy is imported to build it, so ``--help`` answers
at once.  :func:`parse_or_exit` turns every ``ValueError``/``TypeError`` raised while reading
and checking the config into ``parser.error`` (status 2, the message names the key and the
allowed values) -- before torch, Lightning or any model loads.  :func:`run_or_exit` runs the
training and turns :class:`~hyro_edu.training.runs.TrainingInterrupted` into the message
"interrupted at step N; run the same command to resume" on stderr and the exit status 130
(SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Callable, Sequence, TypeVar

from hyro_edu.training.runs import RunConflict, TrainingInterrupted

__all__ = ["config_parser", "parse_or_exit", "run_or_exit"]

T = TypeVar("T")


def config_parser(prog: str, description: str, *, configs: Sequence[str], default: str,
                  epilog: str = "") -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the options every trainer shares."""
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
    return parser


def parse_or_exit(parser: argparse.ArgumentParser, check: Callable[[], T]) -> T:
    """``check()``, with a ``ValueError``/``TypeError`` reported by ``parser.error`` (exit status 2)."""
    try:
        return check()
    except RunConflict as err:
        parser.error(str(err))
    except (ValueError, TypeError) as err:
        parser.error(str(err))


def run_or_exit(parser: argparse.ArgumentParser, work: Callable[[], int]) -> int:
    """``work()``; an interruption prints its message on stderr and returns ``128 + signal``; a
    :class:`~hyro_edu.training.runs.RunConflict` found late (an old run without ``run.json``) is
    reported by ``parser.error``."""
    try:
        return work()
    except TrainingInterrupted as err:
        sys.stdout.flush()
        print(f"\n{err.message()}", file=sys.stderr, flush=True)
        return err.exit_code
    except RunConflict as err:
        parser.error(str(err))
