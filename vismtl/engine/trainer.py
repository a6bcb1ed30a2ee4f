"""The training loop: iterations, accumulation, DDP, evaluation, checkpoints and exact resume.

Exact resume rests on three things: the data stream is a pure function of (seed, batch
position) (:mod:`vismtl.data.samplers`), every generator the loop draws from is saved in
the checkpoint, and nothing outside the loop (loader start-up, evaluation) draws from the
global generators. A run killed at any point and resumed from its last checkpoint then
ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vismtl.config import Config, ConfigError, call_with_config, suggest, to_plain
from vismtl.data import build_dataset, build_eval_loader, build_train_loader
from vismtl.engine import checkpoint as ckpt
from vismtl.engine.distributed import DistInfo, all_reduce_sum, world_size
from vismtl.engine.evaluator import evaluate
from vismtl.engine.logger import RunLogger
from vismtl.engine.losses import multitask_loss
from vismtl.engine.optim import build_optimizer, build_scheduler
from vismtl.engine.report import compute_delta_m, format_table, write_eval_json
from vismtl.engine.settings import RunSettings
from vismtl.engine.sync_bn import convert_sync_batchnorm
from vismtl.models import build_model
from vismtl.progress import progress_bar
from vismtl.tasks import Task

log = logging.getLogger("vismtl")


@dataclass
class TrainState:
    model: nn.Module  # unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    iteration: int = 0


@contextlib.contextmanager
def _workers_stopped_on_error(batches: Any) -> Iterator[None]:
    """Stop the loader's worker processes when the loop ends on an error (Ctrl-C, SIGTERM), before
    the error's message. Left to the iterator's cleanup at exit, workers that the same SIGTERM
    ended (a scheduler signals the whole process group) made it print a traceback after that
    message ("DataLoader worker ... is killed by signal: Terminated")."""
    try:
        yield
    except BaseException:
        shutdown = getattr(batches, "_shutdown_workers", None)  # a multi-process iterator's
        if shutdown is not None:
            with contextlib.suppress(Exception):
                shutdown()
        raise


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def freeze_except(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Only parameters whose names start with one of ``prefixes`` keep requiring gradients."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            groups = sorted({".".join(n.split(".")[:3]) for n in names})
            raise ConfigError(f"train.trainable: no parameter starts with '{prefix}'{suggest(prefix, groups)}")
    for name, param in model.named_parameters():
        param.requires_grad_(any(name.startswith(p) for p in prefixes))


def resolve_resume(resume: bool | str | None, work_dir: Path) -> Path | None:
    """``--resume`` alone means the work dir's ``latest.pth`` (if any); a path must exist."""
    if not resume:
        return None
    if resume is True:
        latest = work_dir / "checkpoints" / "latest.pth"
        if latest.is_file():
            return latest
        log.warning("--resume: no checkpoint in %s yet, starting from scratch", latest.parent)
        return None
    path = Path(resume)
    if not path.is_file():
        raise ckpt.CheckpointError(f"--resume: checkpoint not found: {path}")
    return path


class Trainer:
    """Trains ``cfg``'s model in ``work_dir`` (one instance per run and rank).

    Args:
        cfg: the loaded config.
        settings: its checked ``train``/``data``/``evaluation`` sections.
        work_dir: where logs, checkpoints and ``eval.json`` go.
        dist_info: this process's rank and device.
    """

    def __init__(
        self, cfg: Config, settings: RunSettings, tasks: Mapping[str, Task], work_dir: Path, dist_info: DistInfo
    ) -> None:
        self.cfg, self.settings, self.tasks = cfg, settings, dict(tasks)
        self.work_dir, self.info = work_dir, dist_info
        self.amp = settings.train.amp
        data = settings.data
        if data.train is None:
            raise ConfigError("data.train is missing: the config names no training dataset")
        # Datasets first: a wrong dataset config should fail before any model is built.
        self.train_set = build_dataset(data.train, self.tasks, "data.train")
        self.val_set = build_dataset(data.val, self.tasks, "data.val") if data.val else None

        torch.manual_seed(settings.seed)  # same initial weights on every rank
        model = build_model(cfg["model"], self.tasks)
        if settings.train.load_from:
            path = settings.train.load_from
            ckpt.load_model_weights(model, ckpt.load_checkpoint(path), path)
        if settings.train.trainable is not None:
            freeze_except(model, settings.train.trainable)
        if settings.train.sync_bn and world_size() > 1:
            model = convert_sync_batchnorm(model, dist_info.device)
        model.to(dist_info.device)
        optimizer = call_with_config(build_optimizer, cfg.get("optimizer"), "optimizer", model=model)
        scheduler = call_with_config(
            build_scheduler, cfg.get("schedule"), "schedule", optimizer=optimizer, max_iters=settings.train.max_iters
        )
        self.state = TrainState(model, optimizer, scheduler)
        torch.manual_seed(settings.seed + dist_info.rank)  # dropout etc. differ per rank
        self.logger = RunLogger(work_dir, enabled=dist_info.is_main)

    # -- checkpoints -------------------------------------------------------------------

    def save(self) -> Path:
        """Write ``iter_N.pth`` and point ``latest.pth`` at it (main rank; all ranks' RNG states)."""
        rng = [None] * world_size()
        if world_size() > 1:
            dist.all_gather_object(rng, ckpt.rng_state())
        else:
            rng = [ckpt.rng_state()]
        path = self.work_dir / "checkpoints" / f"iter_{self.state.iteration}.pth"
        if self.info.is_main:
            ckpt.atomic_save(
                {
                    "model": self.state.model.state_dict(),
                    "optimizer": self.state.optimizer.state_dict(),
                    "scheduler": self.state.scheduler.state_dict(),
                    "iteration": self.state.iteration,
                    "rng": rng,
                    "world_size": world_size(),
                    "model_config": to_plain(self.cfg["model"]),
                    "tasks": list(self.tasks),
                    "config": self.cfg.pretty_text,
                },
                path,
            )
            ckpt.atomic_link(path, path.with_name("latest.pth"))
            self._prune_checkpoints()
        return path

    def _prune_checkpoints(self) -> None:
        keep = self.settings.train.max_keep_checkpoints
        if keep <= 0:
            return
        folder = self.work_dir / "checkpoints"
        saved = sorted(folder.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
        for old in saved[:-keep]:
            old.unlink(missing_ok=True)

    def resume_from(self, path: Path) -> None:
        checkpoint = ckpt.load_checkpoint(path)
        ckpt.load_model_weights(self.state.model, checkpoint, path)
        for key in ("optimizer", "scheduler", "iteration"):
            if key not in checkpoint:
                raise ckpt.CheckpointError(f"cannot resume from {path}: it has no {key} state (a weights-only file?)")
        self.state.optimizer.load_state_dict(checkpoint["optimizer"])
        self.state.scheduler.load_state_dict(checkpoint["scheduler"])
        self.state.iteration = int(checkpoint["iteration"])
        states = checkpoint.get("rng") or []
        if len(states) == world_size():
            ckpt.set_rng_state(states[self.info.rank])
        else:
            log.warning(
                "checkpoint was saved with %d ranks, now %d: RNG states not restored", len(states), world_size()
            )
        self.logger.truncate_after(self.state.iteration)
        if self.info.is_main:
            log.info("resumed from %s at iteration %d", path, self.state.iteration)

    # -- the loop ----------------------------------------------------------------------

    def _train_mode(self) -> None:
        """Training mode, except the norms of a frozen part when ``frozen_norm`` is set."""
        self.state.model.train()
        if self.settings.train.frozen_norm:
            for module in self.state.model.modules():
                params = list(module.parameters(recurse=False))
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in params):
                    module.eval()

    def _labelled_tasks(self, batch: Mapping[str, Any]) -> list[str] | None:
        """Tasks with a label somewhere in the global batch; None when all have one.

        Decoders of the others run without gradients (partially labelled sources).
        """
        counts = all_reduce_sum(batch["task_mask"].sum(0).float())
        labelled = [name for name, count in zip(self.tasks, counts.tolist()) if count > 0]
        return None if len(labelled) == len(self.tasks) else labelled

    def evaluate(self) -> dict[str, dict[str, float]]:
        data = self.settings.data
        loader = build_eval_loader(self.val_set, data.val_batch_size, data.num_workers, self.info.rank, world_size())
        return evaluate(self.state.model, loader, self.tasks, self.info.device, self.amp, progress=self.info.is_main)

    @staticmethod
    def _check_finite_weights(model: nn.Module, iteration: int) -> None:
        """FloatingPointError unless every weight is finite: a diverged step (its loss still finite)
        must not be saved over ``latest.pth``, which a resume would start from."""
        if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):  # one sync
            raise FloatingPointError(
                f"weights are not finite after iteration {iteration} (not saved); lower optimizer.lr or set "
                "train.grad_clip"
            )

    def _log_eval(self, results: dict[str, dict[str, float]]) -> float | None:
        delta = compute_delta_m(results, self.tasks, self.settings.evaluation.baselines)
        self.logger.log({"iter": self.state.iteration, "val": results, "delta_m": delta}, prefix="val")
        if self.info.is_main:
            tqdm.write(f"evaluation at iteration {self.state.iteration}:\n{format_table(results, self.tasks, delta)}")
        return delta

    def train(self) -> dict[str, dict[str, float]] | None:
        """Run to ``max_iters``; returns the final evaluation (None without a val set)."""
        s, info, state = self.settings.train, self.info, self.state
        model: nn.Module = state.model
        if world_size() > 1:
            device_ids = [info.device.index] if info.device.type == "cuda" else None
            model = DistributedDataParallel(
                model, device_ids=device_ids, find_unused_parameters=s.find_unused_parameters
            )
        loader = build_train_loader(
            self.train_set,
            self.settings.data.batch_size,
            self.settings.data.num_workers,
            self.settings.seed,
            info.rank,
            world_size(),
            start_batch=state.iteration * s.accumulate,
        )
        batches = iter(loader)
        names = list(self.tasks)
        bar = progress_bar(total=s.max_iters, initial=state.iteration, desc="train", disable=not info.is_main)
        with bar, _workers_stopped_on_error(batches):  # both before an error's message, not after it
            self._train_mode()
            tic = time.perf_counter()
            while state.iteration < s.max_iters:
                data_time = 0.0
                state.optimizer.zero_grad(set_to_none=True)
                for micro in range(s.accumulate):
                    start = time.perf_counter()
                    batch = _to_device(next(batches), info.device)
                    data_time += time.perf_counter() - start
                    last = micro == s.accumulate - 1
                    sync = contextlib.nullcontext() if last or world_size() == 1 else model.no_sync()
                    with sync:
                        with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=self.amp):
                            outputs = model(batch["image"], grad_tasks=self._labelled_tasks(batch))
                        result = multitask_loss(outputs, batch, self.tasks)
                        (result.total / s.accumulate).backward()
                grad_norm = None
                if s.grad_clip:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(state.model.parameters(), s.grad_clip))
                state.optimizer.step()
                state.scheduler.step()
                state.iteration += 1
                bar.update(1)

                if state.iteration % s.log_interval == 0 or state.iteration == s.max_iters:
                    losses = result.per_task(names)
                    total = sum(self.tasks[n].loss_weight * v for n, v in losses.items())
                    if not math.isfinite(total):
                        raise FloatingPointError(
                            f"loss is {total} at iteration {state.iteration} ({losses}); "
                            "lower optimizer.lr or set train.grad_clip"
                        )
                    elapsed = time.perf_counter() - tic
                    record = {
                        "iter": state.iteration,
                        "loss": total,
                        **{f"loss_{n}": v for n, v in losses.items()},
                        "lr": state.optimizer.param_groups[0]["lr"],
                        "grad_norm": grad_norm,
                        "data_time": data_time,
                        "time": elapsed / s.log_interval,
                    }
                    self.logger.log(record)
                    bar.set_postfix(loss=f"{total:.3f}", lr=f"{record['lr']:.2e}")
                    tic = time.perf_counter()

                if (
                    self.val_set is not None
                    and s.val_interval
                    and state.iteration % s.val_interval == 0
                    and state.iteration < s.max_iters
                ):
                    self._log_eval(self.evaluate())
                    self._train_mode()
                if state.iteration % s.checkpoint_interval == 0 or state.iteration == s.max_iters:
                    self._check_finite_weights(state.model, state.iteration)  # the checkpoint before is kept
                    self.save()

        results = None
        if self.val_set is not None:
            results = self.evaluate()
            delta = self._log_eval(results)
            if info.is_main:
                write_eval_json(self.work_dir / "eval.json", results, delta, iteration=state.iteration)
        self.logger.close()
        return results
