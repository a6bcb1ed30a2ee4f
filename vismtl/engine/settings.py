"""The ``train``, ``data`` and ``evaluation`` sections of a config, checked at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vismtl.config import Config, ConfigError, call_with_config


@dataclass(frozen=True)
class TrainSettings:
    """How long and how to train.

    Attributes:
        max_iters: optimizer steps.
        val_interval: evaluate every this many steps (0: only at the end).
        checkpoint_interval: save ``iter_N.pth`` and ``latest.pth`` every this many steps.
        log_interval: write a ``log.jsonl`` record every this many steps.
        grad_clip: clip the global gradient norm to this (None: no clipping).
        accumulate: micro-batches per optimizer step (gradient accumulation).
        amp: bfloat16 autocast (also switched on by ``--amp``).
        sync_bn: synchronise BatchNorm statistics across ranks.
        max_keep_checkpoints: keep only the newest ``iter_N.pth`` files (0: keep all).
        find_unused_parameters: passed to DistributedDataParallel (needed when decoders of
            unlabelled tasks run without gradients, or parts of the model are frozen).
        load_from: initial weights from this checkpoint (not a resume: the iteration,
            optimizer and schedule start afresh).
        trainable: train only parameters whose names start with one of these prefixes
            (e.g. ``["decoder.decoders.nuclei_type", "heads.nuclei_type"]``); the rest is frozen.
        frozen_norm: keep every BatchNorm of the frozen part in evaluation mode (running
            statistics fixed), as in Cerberus' second stage.
    """

    max_iters: int = 1000
    val_interval: int = 0
    checkpoint_interval: int = 500
    log_interval: int = 20
    grad_clip: float | None = None
    accumulate: int = 1
    amp: bool = False
    sync_bn: bool = False
    max_keep_checkpoints: int = 3
    find_unused_parameters: bool = False
    load_from: str | None = None
    trainable: tuple[str, ...] | None = None
    frozen_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("max_iters", "accumulate", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1 (got {getattr(self, name)})")


@dataclass(frozen=True)
class DataSettings:
    """Datasets and loaders.

    Attributes:
        train, val, test: dataset configs ``dict(type=..., **options)``; test falls back to val.
        batch_size: training samples per rank and micro-batch.
        val_batch_size: evaluation samples per rank and batch.
        num_workers: loader worker processes per rank.
    """

    train: dict[str, Any] | None = None
    val: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    batch_size: int = 8
    val_batch_size: int = 8
    num_workers: int = 2

    def __post_init__(self) -> None:
        for name in ("batch_size", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be at least 1 (got {getattr(self, name)})")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be 0 (no worker processes) or more, not {self.num_workers}")


@dataclass(frozen=True)
class EvalSettings:
    """Attributes:
    baselines: single-task results for Delta_m: ``{task: {metric: value}}``, or the path(s)
        of the single-task runs' ``eval.json`` files (relative to the current folder); a
        path with ``{task}`` stands for one file per task.
    show_max: at most this many panels with ``--show-dir``.
    """

    baselines: Any = None
    show_max: int = 20


@dataclass(frozen=True)
class RunSettings:
    train: TrainSettings
    data: DataSettings
    evaluation: EvalSettings
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:  # numpy's generators take no other seed
            raise ConfigError(f"seed (--seed) must lie in [0, 2**32), not {self.seed}")


def read_settings(cfg: Config) -> RunSettings:
    """Check the non-model sections of ``cfg``; unknown keys raise ConfigError."""
    return RunSettings(
        train=call_with_config(TrainSettings, cfg.get("train"), "train"),
        data=call_with_config(DataSettings, cfg.get("data"), "data"),
        evaluation=call_with_config(EvalSettings, cfg.get("evaluation"), "evaluation"),
        seed=int(cfg.get("seed", 0)),
    )


def resolve_work_dir(cfg: Config, config_path: str | Path, work_dir: str | Path | None) -> Path:
    """``--work-dir``, else the config's ``work_dir``, else ``work_dirs/<config name>``."""
    if work_dir is not None:
        return Path(work_dir)
    if cfg.get("work_dir"):
        return Path(cfg["work_dir"])
    return Path("work_dirs") / Path(config_path).stem
