"""``train`` and ``test``: what tools/train.py and tools/test.py run, usable from Python."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vismtl.config import ConfigError, load_config
from vismtl.data import build_dataset, build_eval_loader
from vismtl.engine import checkpoint as ckpt
from vismtl.engine.distributed import destroy, init_distributed, world_size
from vismtl.engine.evaluator import evaluate
from vismtl.engine.precision import advise_amp
from vismtl.engine.report import compute_delta_m, format_table, write_eval_json
from vismtl.engine.settings import read_settings, resolve_work_dir
from vismtl.engine.trainer import Trainer, resolve_resume
from vismtl.engine.visualize import make_gate_panel, make_panel
from vismtl.io import atomic_open, hold_folder, output_folder, write_png, write_png_gray
from vismtl.models import build_model
from vismtl.tasks import build_tasks

log = logging.getLogger("vismtl")


def _prepare(config: str | Path, cfg_options: Mapping[str, Any] | None, amp: bool, seed: int | None):
    cfg = load_config(config, cfg_options)
    if amp:
        cfg.merge_from_dict({"train.amp": True})
    if seed is not None:
        cfg.seed = seed
    settings = read_settings(cfg)
    tasks = build_tasks(cfg.get("tasks"))
    if "model" not in cfg:
        raise ConfigError(f"config {config} has no 'model' section")
    return cfg, settings, tasks


def train(
    config: str | Path,
    work_dir: str | Path | None = None,
    resume: bool | str | None = None,
    amp: bool = False,
    seed: int | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    launcher: str = "none",
) -> dict[str, dict[str, float]] | None:
    """Train the model of ``config``; returns the final evaluation (also in ``eval.json``).

    Args:
        resume: True for the work dir's ``latest.pth``, or a checkpoint path.
        launcher: ``"pytorch"`` under torchrun.
    """
    cfg, settings, tasks = _prepare(config, cfg_options, amp, seed)
    info = init_distributed(launcher)
    lock = None
    try:
        work_dir = output_folder(resolve_work_dir(cfg, config, work_dir), "--work-dir")
        if info.is_main:
            lock = hold_folder(work_dir, "--work-dir")  # rank 0's, for every rank
            advise_amp(info.device, settings.train.amp)
            with atomic_open(work_dir / "config.py", "w") as handle:
                handle.write(cfg.pretty_text)
        trainer = Trainer(cfg, settings, tasks, work_dir, info)
        checkpoint = resolve_resume(resume, work_dir)
        if checkpoint is not None:
            trainer.resume_from(checkpoint)
        return trainer.train()
    finally:
        if lock is not None:
            lock.close()
        destroy()


def test(
    config: str | Path,
    checkpoint: str | Path,
    work_dir: str | Path | None = None,
    show_dir: str | Path | None = None,
    export_dir: str | Path | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    amp: bool = False,
    launcher: str = "none",
) -> tuple[dict[str, dict[str, float]], float | None]:
    """Evaluate ``checkpoint`` on the config's test (else val) set; writes ``eval.json``.

    Returns ``(results, delta_m)``. With ``show_dir``, PNG panels (input, each task's
    prediction over its ground truth) are written there. With ``export_dir``, every
    prediction is saved as ``export_dir/<task>/<image name>.png`` (see ``Task.export``;
    the edge maps are in the layout the MATLAB SEISM tools read).
    """
    cfg, settings, tasks = _prepare(config, cfg_options, amp, None)
    dataset_cfg = settings.data.test or settings.data.val
    if dataset_cfg is None:
        raise ConfigError(f"config {config} has neither data.test nor data.val to evaluate on")
    info = init_distributed(launcher)
    try:
        # each output folder checked before the evaluation, which may take hours
        work_dir = output_folder(resolve_work_dir(cfg, config, work_dir), "--work-dir")
        show_dir = show_dir and output_folder(show_dir, "--show-dir")
        export_dir = export_dir and output_folder(export_dir, "--export-dir")
        dataset = build_dataset(dataset_cfg, tasks, "data.test" if settings.data.test else "data.val")
        model = build_model(cfg["model"], tasks)
        ckpt.load_model_weights(model, ckpt.load_checkpoint(checkpoint), checkpoint)
        model.to(info.device)
        loader = build_eval_loader(
            dataset, settings.data.val_batch_size, settings.data.num_workers, info.rank, world_size()
        )
        callbacks = []
        if show_dir:
            callbacks.append(PanelWriter(show_dir, tasks, settings.evaluation.show_max, model))
        exporter = PredictionExporter(export_dir, tasks, info.rank, world_size()) if export_dir else None
        if exporter is not None:
            callbacks.append(exporter)
        amp = settings.train.amp
        results = evaluate(model, loader, tasks, info.device, amp, callbacks=callbacks, progress=info.is_main)
        if exporter is not None:
            exporter.close()  # the image-level classes' tables
        delta = compute_delta_m(results, tasks, settings.evaluation.baselines)
        if info.is_main:
            print(format_table(results, tasks, delta))
            out = work_dir / "eval.json"
            write_eval_json(out, results, delta, checkpoint=str(checkpoint), config=str(config))
            print(f"wrote {out}")
        return results, delta
    finally:
        destroy()


class PredictionExporter:
    """Writes each prediction as ``folder/<task>/<image name>.png`` for the tasks that export an
    image, and the image-level classes (tissue types) as ``folder/<task>.csv`` (image, class,
    class name; ``<task>.rank<R>.csv`` per rank under torchrun) once :meth:`close` is called."""

    def __init__(self, folder: Path, tasks, rank: int = 0, ranks: int = 1) -> None:
        self.folder, self.tasks = folder, tasks
        self.suffix = f".rank{rank}.csv" if ranks > 1 else ".csv"
        self.rows: dict[str, list[tuple]] = {name: [] for name, task in tasks.items() if not task.dense}

    def __call__(self, batch: dict[str, Any], predictions: dict[str, torch.Tensor]) -> None:
        for i, name in enumerate(batch["meta"]["name"]):
            for task_name, task in self.tasks.items():
                if task_name in self.rows:
                    label = int(predictions[task_name][i])
                    names = getattr(task, "class_names", None) or ()
                    self.rows[task_name].append((name, label, names[label] if label < len(names) else label))
                    continue
                image = task.export(predictions[task_name][i])
                if image is not None:
                    writer = write_png if image.ndim == 3 else write_png_gray  # colour exports are RGB
                    writer(self.folder / task_name / f"{name}.png", image)

    def close(self) -> None:
        for task_name, rows in self.rows.items():
            with atomic_open(self.folder / f"{task_name}{self.suffix}", "w") as handle:
                csv.writer(handle, lineterminator="\n").writerows([("image", "class", "class_name"), *rows])


class PanelWriter:
    """Writes one PNG panel per evaluated sample, up to ``limit`` (per rank).

    With a decoder that has gates (TaskExpert), ``<name>_gates.png`` shows per task and
    layer which expert (or the memory) wins at each position.
    """

    def __init__(self, folder: Path, tasks, limit: int, model: torch.nn.Module | None = None) -> None:
        self.folder, self.tasks, self.limit, self.written = folder, tasks, limit, 0
        self.model = model if model is not None and hasattr(model.decoder, "gate_maps") else None

    def __call__(self, batch: dict[str, Any], predictions: dict[str, torch.Tensor]) -> None:
        count = min(batch["image"].shape[0], self.limit - self.written)
        if count <= 0:
            return
        gates = self._gates(batch["image"][:count]) if self.model is not None else None
        for i in range(count):
            image = np.ascontiguousarray(batch["image"][i].permute(1, 2, 0).numpy())
            preds = {name: predictions[name][i] for name in self.tasks}
            targets = {name: batch[name][i] if batch["task_mask"][i, t] else None for t, name in enumerate(self.tasks)}
            name = batch["meta"]["name"][i]
            write_png(self.folder / f"{name}.png", make_panel(image, preds, targets, self.tasks))
            if gates is not None:
                tile_gates = {task: value[i] for task, value in gates.items()}
                write_png(self.folder / f"{name}_gates.png", make_gate_panel(tile_gates, image.shape[:2]))
            self.written += 1

    @torch.no_grad()
    def _gates(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        device = next(self.model.parameters()).device
        maps = self.model.decoder.gate_maps(self.model.backbone_features(images.to(device)))
        return {task: value.float().cpu().numpy() for task, value in maps.items()}
