r"""Training configs: frozen dataclasses read from YAML, with ``key=value`` overrides and a run key.

A system's config is a frozen dataclass that also derives from :class:`TrainConfig`.  A config
comes from a shipped YAML name (a file in the system's ``configs`` package), a YAML path, or the
system's default, with overrides applied on top (``--set key=value`` on the command line, values
read as YAML):

.. math::
    \text{config} = \text{dataclass}\big(\text{YAML} \oplus \text{overrides}\big),\qquad
    \text{key} = \mathrm{sha256}\big(\mathrm{json}(\text{resolved config} \setminus
    \text{bookkeeping})\big)_{[:16]},

where :math:`\oplus` lets the overrides win.  The key names a run: two configs with the same key
train the same weights (bookkeeping fields such as the run name, evaluation sets or the progress
bar are left out, :attr:`TrainConfig.KEY_IGNORES`), so a run directory belongs to one key.

Every system's config also derives from :class:`hyro_edu.training.config.DistributedConfig`:
``devices``, ``num_nodes``, ``strategy`` and ``accumulate_grad_batches`` say how many processes
share one optimiser step, not what the step is.  ``batch_size`` stays the *global* batch of the
recipe; each process reads

.. math::
    b_{\text{device}} = \frac{\text{batch\_size}}{\text{devices}\cdot\text{num\_nodes}\cdot
    \text{accumulate\_grad\_batches}}

examples per micro-batch (:attr:`hyro_edu.training.config.DistributedConfig.per_device_batch_size`),
so the examples of a step, their order and the learning-rate schedule do not depend on these
fields.  They are left out of the key: a run can be resumed on another number of GPUs.

Every problem raises ``ValueError`` naming the key: unknown keys (with a "did you mean"
suggestion), a malformed override, a YAML file that is not a mapping.  A scalar given for a field
whose default is a tuple (``--set eval_data=ade20k_150``) becomes a one-element tuple, never the
letters of a string.  This module imports neither torch nor Lightning, so a command line can check
a config before anything heavy loads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import ClassVar, Mapping, Sequence, Union

import yaml

from hyro_edu.core import paths
from hyro_edu.training.runs import check_run

__all__ = ["TrainConfig", "DistributedConfig", "STRATEGIES", "shipped_configs", "parse_value", "parse_overrides",
           "suggest"]

#: ``strategy`` values: ``"auto"`` (one process on one device; several devices or nodes: ``"ddp"``)
#: and ``"ddp"`` (Lightning's ``DistributedDataParallel``, one process per device).
STRATEGIES = ("auto", "ddp")


def shipped_configs(package: str) -> list[str]:
    """Names of the ``*.yaml`` files in ``package`` (without the suffix), sorted."""
    return sorted(p.name[:-5] for p in resources.files(package).iterdir() if p.name.endswith(".yaml"))


def parse_value(text: str):
    """An override value read as YAML (``null``, ``true``, ``[1, 2]``, ``3e-3`` ...).

    YAML 1.1 reads ``3e-3`` (no dot) as a string; a number was meant, so such strings become
    floats.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"cannot read {text!r} as a YAML value ({err.__class__.__name__})") from None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def parse_overrides(overrides: Union[Mapping, Sequence[str], None]) -> dict:
    """``{"key": value}`` from a mapping or from ``"key=value"`` strings (values: :func:`parse_value`)."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = [overrides]
    values = {}
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"overrides must look like key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            values[key] = parse_value(text)
        except ValueError as err:
            raise ValueError(f"override {key}: {err}") from None
    return values


def suggest(word: str, options: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options`` (difflib), or ``""``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    r"""The fields that spread a run over devices, mixed into every system's config dataclass.

    Attributes
    ----------
    devices : processes (GPUs, or CPU processes) per node, an integer >= 1.
    num_nodes : machines, an integer >= 1 (see README, "Training on more GPUs", for the launch).
    strategy : one of :data:`hyro_edu.training.config.STRATEGIES`: ``"auto"`` (a single process when
        ``devices × num_nodes`` is 1, ``"ddp"`` otherwise) or ``"ddp"`` (the same: with one
        process there is nothing to distribute).
    accumulate_grad_batches : micro-batches whose gradients each process adds up before one
        optimiser step, an integer >= 1.

    ``batch_size`` stays the global batch of an optimiser step: every process reads
    :attr:`hyro_edu.training.config.DistributedConfig.per_device_batch_size` =
    ``batch_size / (devices × num_nodes × accumulate_grad_batches)`` examples per micro-batch,
    and that division must be exact.  Micro-batch ``m`` of a step on process ``r`` holds stream
    positions ``step × batch_size + (m × world + r) × per_device`` onwards
    (:class:`hyro_edu.training.stream.ResumableSampler`), so the examples of a step do not depend
    on these fields, and neither does the gradient, up to floating-point summation order, when
    the loss is a mean over equally weighted examples.  The fields are left out of
    :meth:`hyro_edu.training.config.TrainConfig.key` (``DISTRIBUTED_FIELDS``): a run stopped on
    one GPU resumes on four and the other way round.  A subclass calls
    :meth:`hyro_edu.training.config.DistributedConfig.check_distributed` in its
    ``__post_init__``.
    """

    #: The fields of this mixin (left out of the key, printed last).
    DISTRIBUTED_FIELDS: ClassVar[tuple] = ("devices", "num_nodes", "strategy", "accumulate_grad_batches")

    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accumulate_grad_batches: int = 1

    @property
    def world_size(self) -> int:
        """``devices × num_nodes``: the processes that train together."""
        return int(self.devices) * int(self.num_nodes)

    @property
    def per_device_batch_size(self) -> int:
        """``batch_size / (devices × num_nodes × accumulate_grad_batches)``: the examples one
        process reads per micro-batch (``ValueError`` unless the division is exact)."""
        return self.split_batch(getattr(self.resolved(), "batch_size"))

    def split_batch(self, batch_size) -> int:
        """The per-device micro-batch of the global ``batch_size`` (``ValueError`` naming
        ``batch_size`` and the product when it does not divide)."""
        parts = self.world_size * int(self.accumulate_grad_batches)
        if batch_size is None or batch_size % parts:
            raise ValueError(
                f"batch_size {batch_size!r} (the global batch of a step) must be divisible by devices x num_nodes "
                f"x accumulate_grad_batches = {self.devices} x {self.num_nodes} x "
                f"{self.accumulate_grad_batches} = {parts}")
        return batch_size // parts

    def check_distributed(self, batch_size) -> None:
        """``ValueError`` naming the field for a value out of range, and for a global
        ``batch_size`` that does not split evenly
        (:meth:`hyro_edu.training.config.DistributedConfig.split_batch`)."""
        for name in ("devices", "num_nodes", "accumulate_grad_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}"
                             + suggest(str(self.strategy), STRATEGIES))
        if isinstance(batch_size, int) and not isinstance(batch_size, bool):
            self.split_batch(batch_size)


class TrainConfig:
    """Mixin for a system's frozen config dataclass: loading, sequence fields, ``to_dict``, ``key``.

    Class attributes a system sets:

    ``CONFIG_PACKAGE``: the package holding the shipped ``*.yaml`` configs;
    ``DEFAULT_CONFIG``: the shipped name used when no config is given;
    ``KEY_IGNORES``: bookkeeping fields left out of :meth:`hyro_edu.training.config.TrainConfig.key` (the fields of
    :class:`hyro_edu.training.config.DistributedConfig` are left out too);
    ``KEY_OMIT_DEFAULTS``: fields added after runs were written: hashed only when they differ
    from their default, so the keys of earlier runs stay valid.

    The dataclass's ``__post_init__`` should call :meth:`coerce_sequences` first.
    """

    CONFIG_PACKAGE: ClassVar[str] = ""
    DEFAULT_CONFIG: ClassVar[str] = ""
    KEY_IGNORES: ClassVar[tuple] = ("name",)
    KEY_OMIT_DEFAULTS: ClassVar[tuple] = ()

    # -- fields ------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_default(cls, name: str):
        for f in dataclasses.fields(cls):
            if f.name == name:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
        raise KeyError(name)

    @classmethod
    def sequence_fields(cls) -> list[str]:
        """Fields whose default is a tuple: they hold lists."""
        return [name for name in cls.field_names() if isinstance(cls.field_default(name), tuple)]

    def coerce_sequences(self) -> None:
        """Store every sequence field as a tuple; a scalar (a string, a number) becomes ``(value,)``."""
        for name in self.sequence_fields():
            value = getattr(self, name)
            if isinstance(value, (str, bytes, int, float)) or value is None:
                value = (value,)
            elif isinstance(value, Mapping):
                raise ValueError(f"{name} must be a list, got a mapping {dict(value)!r}")
            else:
                try:
                    value = tuple(value)
                except TypeError:
                    raise ValueError(f"{name} must be a list, got {value!r}") from None
            object.__setattr__(self, name, value)

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def available_configs(cls) -> list[str]:
        """Names of the shipped YAML configs (files in ``CONFIG_PACKAGE``)."""
        return shipped_configs(cls.CONFIG_PACKAGE)

    @classmethod
    def read_values(cls, config: Union[str, Path, None] = None) -> dict:
        """The mapping of a shipped config name, a YAML path, or ``None`` (``DEFAULT_CONFIG``)."""
        if config is None:
            config = cls.DEFAULT_CONFIG
        path = Path(config)
        shipped = cls.available_configs()
        if path.suffix in (".yaml", ".yml") and path.is_file():
            text = path.read_text(encoding="utf-8")
        elif str(config) in shipped:
            text = resources.files(cls.CONFIG_PACKAGE).joinpath(f"{config}.yaml").read_text(encoding="utf-8")
        else:
            raise ValueError(f"config must be a YAML file or one of {shipped}, got {str(config)!r}"
                             + suggest(str(config), shipped))
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config {config!s} is not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config {config!s} must hold a mapping of settings, got {type(values).__name__}")
        return values

    @classmethod
    def check_keys(cls, values: Mapping) -> None:
        """``ValueError`` for keys that are not fields, with the closest field as a suggestion."""
        known = cls.field_names()
        unknown = sorted(set(values) - set(known), key=str)
        if unknown:
            close = [difflib.get_close_matches(str(k), known, n=1, cutoff=0.6) for k in unknown]
            if len(unknown) == 1:
                hints = repr(close[0][0]) if close[0] else ""
            else:
                hints = ", ".join(f"{c[0]!r} for {k!r}" for k, c in zip(unknown, close) if c)
            raise ValueError(f"unknown config keys {unknown}" + (f"; did you mean {hints}? " if hints else "; ")
                             + f"allowed: {sorted(known)}")

    @classmethod
    def load(cls, config: Union[str, Path, None] = None,
             overrides: Union[Mapping, Sequence[str], None] = None):
        """``cls(**values)`` from :meth:`read_values` with ``overrides`` (:func:`parse_overrides`)
        applied on top.  Every problem is a ``ValueError`` naming the key."""
        values = cls.read_values(config)
        values.update(parse_overrides(overrides))
        cls.check_keys(values)
        try:
            return cls(**values)
        except TypeError as err:  # e.g. a comparison of a string with a number inside a check
            raise ValueError(str(err)) from None

    # -- identity ----------------------------------------------------------------------------
    def resolved(self):
        """The config with every value filled in (a system with presets overrides this)."""
        return self

    def to_dict(self) -> dict:
        """The fields as plain YAML/JSON values (tuples as lists)."""
        d = dataclasses.asdict(self)
        for name in self.sequence_fields():
            d[name] = list(getattr(self, name))
        for name in getattr(self, "DISTRIBUTED_FIELDS", ()):  # last: the run's placement, not its recipe
            d[name] = d.pop(name)
        return d

    def key(self) -> str:
        """16 hex digits of SHA-256 over the resolved fields that change the trained weights."""
        d = self.resolved().to_dict()
        for name in (*self.KEY_IGNORES, *getattr(self, "DISTRIBUTED_FIELDS", ())):
            d.pop(name)
        for name in self.KEY_OMIT_DEFAULTS:
            if d[name] == self.field_default(name):
                d.pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # -- runs --------------------------------------------------------------------------------
    def check_name(self) -> None:
        """Raise ``ValueError`` unless the ``name`` field is ``None`` or a run name: letters, digits and
        ``-_.``, not starting with ``.`` (the dataclass's ``__post_init__`` calls it)."""
        name = getattr(self, "name", None)
        if name is not None and (not isinstance(name, str) or not name or name.startswith(".")
                                 or any(not (ch.isalnum() or ch in "-_.") for ch in name)):
            raise ValueError(f"name must be null or a run name of letters, digits and '-_.', got {name!r}")

    def run_dir(self, root: Union[str, Path, None] = None) -> Path:
        """``<root>/<name>`` of the resolved config; ``root`` defaults to ``$HYRO_EDU_CHECKPOINTS``
        (:func:`hyro_edu.core.paths.checkpoint_dir`)."""
        config = self.resolved()
        return (Path(root) if root is not None else paths.checkpoint_dir()) / config.name

    def checked_run_dir(self, root: Union[str, Path, None] = None) -> Path:
        """:meth:`hyro_edu.training.config.TrainConfig.run_dir`, after checking that its ``run.json``
        (if any) names this config's key; :class:`~hyro_edu.training.runs.RunConflict` otherwise.
        Reads JSON only."""
        config = self.resolved()
        directory = config.run_dir(root)
        check_run(directory, config.key(), config.name)
        return directory
