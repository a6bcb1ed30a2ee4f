"""Many slides: build the model from a config and checkpoint, split slides over ranks, keep a manifest.

``DIR/manifest.json`` lists every slide with its status: ``done``, ``skipped`` (already done,
with ``--resume``), ``no_tissue``, or ``failed`` with the error. It is rewritten atomically
after every slide; ``DIR/slides.csv`` (:mod:`vismtl.wsi.report`) tabulates the batch at its end.
Under torchrun each rank takes the next slide no rank has taken whenever it is ready for one,
largest file first (:mod:`vismtl.wsi.claims`), and writes its own part; rank 0 waits for
every part and merges them into ``manifest.json``, in the inputs' order (:mod:`vismtl.wsi.ranks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from vismtl.config import ConfigError, call_with_config, load_config, to_plain
from vismtl.engine import checkpoint as ckpt
from vismtl.engine.distributed import broadcast_object, destroy, init_distributed, world_size
from vismtl.engine.precision import advise_amp
from vismtl.io import file_digest, hold_folder, output_folder, write_json
from vismtl.models import build_model
from vismtl.progress import progress_bar
from vismtl.tasks import build_tasks
from vismtl.wsi.claims import SlideClaims, largest_first
from vismtl.wsi.engine import SlideRunner
from vismtl.wsi.inputs import expand_inputs
from vismtl.wsi.ranks import RankProgress, check_shared, clear_parts, merge_manifests, wait_for_ranks, write_part
from vismtl.wsi.report import write_slide_table
from vismtl.wsi.settings import WSISettings

log = logging.getLogger("vismtl")


def infer_slides(
    config: str | Path,
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    resume: bool = False,
    mpp: float | None = None,
    options: Mapping[str, Any] | None = None,
    launcher: str = "none",
) -> list[dict[str, Any]]:
    """Run the config's model over every input slide; returns the manifest entries of this rank.

    Args:
        inputs: slide files, folders of slides, or ``.txt`` files listing slides.
        mpp: microns per pixel of slides whose metadata lacks it.
        options: overrides of the config's ``wsi`` section (tile, stride, context, mpp, ...).
    """
    cfg, tasks, settings = configured(config, options, mpp)
    slides = expand_inputs(inputs)  # before the model is built: inputs without slides fail at once
    out_dir = output_folder(out_dir, "--out-dir")  # before the model loads: not every slide failing
    # ranks meet only once, at the start (they share slides through files), so several may share a
    # GPU: one engine process may not keep a GPU busy (docs/benchmarks.md, "Engines sharing a GPU")
    info = init_distributed(launcher, share_gpus=True)
    lock = None
    try:
        lock = hold_folder(out_dir, "--out-dir") if info.is_main else None  # rank 0's, for every rank
        model = loaded_model(cfg, tasks, checkpoint).to(info.device)
        ranks = world_size()
        claims = SlideClaims(out_dir / ".claims", info.rank)
        if ranks > 1 and info.is_main:
            claims.prepare()
            clear_parts(out_dir)
        # every rank waits for rank 0 here (no rank takes a slide before the claims and parts of
        # an earlier run are gone) and then must see the lock it holds: they share slides on files
        held = broadcast_object(lock.holder if lock is not None else None)
        if held is not None and not info.is_main:
            check_shared(out_dir, held, info.rank)
        taken = claims.take(largest_first(slides)) if ranks > 1 else slides
        entries: list[dict[str, Any]] = []
        if info.is_main:  # once, not once per rank
            advise_amp(info.device, settings.amp, suggest=True)
        quiet = len(slides) < 2 or not info.is_main  # one bar per batch: rank 0's, over every rank's slides
        bar = progress_bar(total=len(slides), desc="slides", unit="slide", disable=quiet)
        progress = RankProgress(bar, out_dir, ranks) if ranks > 1 and not quiet else contextlib.nullcontext()
        with bar, logging_redirect_tqdm(), progress:  # log lines above the progress bars, not through them
            with SlideRunner(model, tasks, settings, info.device, model_id=file_digest(checkpoint)) as runner:
                # the next slide is prepared and the last one concluded while a slide's tiles run
                for entry in runner.run_many(taken, out_dir, resume, mpp):
                    entries.append(entry)
                    ran = f" ({entry['tiles']} tiles in {entry['seconds']:.1f} s)" if entry.get("tiles") else ""
                    log.info("%s: %s%s", entry["name"], entry["status"], ran)  # a log's line per slide
                    if ranks > 1:
                        entry["rank"] = info.rank
                        write_part(out_dir, info.rank, entries)
                        continue
                    write_json(out_dir / "manifest.json", {"slides": entries})
                    bar.set_postfix(Counter(e["status"] for e in entries), refresh=False)
                    bar.update()
            if ranks > 1:
                write_part(out_dir, info.rank, entries, finished=True)
                if info.is_main:  # on files, not in a barrier: the last rank may end long after
                    wait_for_ranks(out_dir, ranks)
        if ranks > 1 and info.is_main:
            write_slide_table(out_dir, merge_manifests(out_dir, ranks, [s.name for s in slides]))
            claims.remove()
        elif ranks == 1:
            write_slide_table(out_dir, entries)
        return entries
    finally:
        if lock is not None:
            lock.close()
        destroy()


def survey_slides(
    config: str | Path,
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    mpp: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``--dry-run``: check the config, the checkpoint and every input slide (opens, has a
    resolution, has tissue) and count the model tiles a run would compute, without running the
    model or writing anything; an entry per slide (:meth:`SlideRunner.survey`)."""
    cfg, tasks, settings = configured(config, options, mpp)
    slides = expand_inputs(inputs)
    model = loaded_model(cfg, tasks, checkpoint)  # a checkpoint of another model fails here, not hours later
    with SlideRunner(model, tasks, settings, torch.device("cpu")) as runner:
        bar = progress_bar(slides, desc="slides", unit="slide", disable=len(slides) < 2)
        with bar, logging_redirect_tqdm():
            return [runner.survey(slide, mpp) for slide in bar]


def configured(
    config: str | Path, options: Mapping[str, Any] | None, slide_mpp: float | None = None
) -> tuple[Any, dict, WSISettings]:
    """The config, its tasks and its ``wsi`` settings with ``options`` applied (an error in the
    config's own section names the file); ``slide_mpp`` (``--mpp``) checked too."""
    if slide_mpp is not None and not slide_mpp > 0:
        raise ConfigError(f"--mpp must be a positive number of microns per pixel, not {slide_mpp}")
    cfg = load_config(config)
    tasks = build_tasks(cfg.get("tasks"))
    try:
        settings = call_with_config(WSISettings, to_plain(dict(cfg.get("wsi") or {})), "wsi")
    except ConfigError as err:
        raise ConfigError(f"{config}: {err}") from err
    settings = dataclasses.replace(settings, **{k: v for k, v in (options or {}).items() if v is not None})
    if settings.mask_dir and not Path(settings.mask_dir).is_dir():  # else every slide's mask silently automatic
        raise ConfigError(f"wsi.mask_dir (--mask-dir) {settings.mask_dir}: no such folder")
    return cfg, tasks, settings


def loaded_model(cfg: Any, tasks: dict, checkpoint: str | Path) -> torch.nn.Module:
    model = build_model(cfg["model"], tasks)
    ckpt.load_model_weights(model, ckpt.load_checkpoint(checkpoint), checkpoint)
    return model


__all__ = ["infer_slides", "survey_slides"]
