"""Whole-slide inference end to end: real slides, bad inputs, instances across borders, resume, ranks."""

from __future__ import annotations

import csv
import dataclasses
import errno
import functools
import gc
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import Future
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import zarr

from conftest import ROOT, SHARED_DATA, folder_held_by_another_run, lock_refused_to_another_process, subprocess_env
from vismtl.config import load_config
from vismtl.models import build_model
from vismtl.tasks import build_tasks
from vismtl.tasks import instance_metrics as im
from vismtl.wsi import SlideRunner, WSISettings
from vismtl.wsi.batching import Prefetched, batches_across_chunks
from vismtl.wsi.geojson import validate_feature_collection
from vismtl.wsi.inputs import SlideInput
from vismtl.wsi.outputs import OUTLINE_COLOURS, outlined_objects
from vismtl.wsi.stitcher import drain, vote_patches
from wsi_helpers import GreyOracle, damage_tile, ellipses, gpu_cycles, write_label_slide

TINY = ROOT / "tests" / "configs" / "tiny_histology.py"
SLIDES = SHARED_DATA / "slides"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"model": build_model(cfg.model, build_tasks(cfg.tasks)).state_dict()}, path)
    return path


def infer(*args, check=False, timeout=300):
    command = [sys.executable, str(ROOT / "tools" / "infer_wsi.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=timeout, check=check)


def manifest(out_dir) -> dict[str, dict]:
    return {e["name"]: e for e in json.loads((out_dir / "manifest.json").read_text())["slides"]}


def test_real_slides_and_bad_inputs(tmp_path, tiny_checkpoint):
    """Good slides complete; each bad input gets a clear status while the others go on; exit status 1."""
    if not SLIDES.is_dir():
        pytest.skip(f"shared slides not found at {SLIDES}")
    slides = [
        "cmu-1-small-region.svs",
        "boxes_0.dcm",
        "broken.svs",
        "unopenable.tiff",
        "unreadable.svs",
        "no-tissue.png",
    ]
    out = tmp_path / "out"
    result = infer(
        TINY,
        tiny_checkpoint,
        *[SLIDES / s for s in slides],
        tmp_path / "missing.svs",
        "--out-dir",
        out,
        "--mpp",
        "0.5",
        "--workers",
        "1",  # reading processes here; the other tests read in a thread (the CPU default)
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "\r" not in result.stderr  # progress as lines in a log, not rewritten in place
    assert re.search(r"^INFO cmu-1-small-region: done \(\d+ tiles in \d+\.\d s\)$", result.stderr, re.MULTILINE)
    entries = manifest(out)
    tally = result.stdout.strip().splitlines()[-1]  # the last line counts them and points to the manifest
    assert tally.startswith("7 slides: ") and tally.endswith(f"; see {out / 'manifest.json'} and {out / 'slides.csv'}")
    assert sorted(tally[len("7 slides: ") : tally.index(";")].split(", ")) == ["1 done", "2 no_tissue", "4 failed"]
    assert entries["cmu-1-small-region"]["status"] == "done"
    assert entries["no-tissue"]["status"] == "no_tissue" and "no tissue found" in entries["no-tissue"]["error"]
    with (out / "slides.csv").open() as handle:  # the batch's table: a row per slide, in the manifest's order
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert list(rows) == list(entries) and all(rows[n]["status"] == entries[n]["status"] for n in rows)
    assert rows["broken"]["error"] == entries["broken"]["error"] and rows["broken"]["nuclei count"] == ""
    summary = json.loads((out / "cmu-1-small-region" / "summary.json").read_text())
    row = rows["cmu-1-small-region"]
    assert int(row["nuclei count"]) == sum(summary["counts"]["nuclei"].values())
    assert float(row["tissue: stroma"]) == round(summary["tissue_classes"]["tissue"]["stroma"], 4)
    height, width = summary["output_grid"]
    tissue_mm2 = summary["tissue_fraction"] * height * width * 0.5**2 / 1e6
    assert float(row["tissue_mm2"]) == pytest.approx(tissue_mm2, abs=1e-4)
    for name, message in (
        ("broken", "cannot open slide"),
        ("unopenable", "cannot open slide"),
        ("unreadable", "cannot read region"),
        ("missing", "slide not found"),
    ):
        assert entries[name]["status"] == "failed" and message in entries[name]["error"], entries[name]
        assert f"{name}." in entries[name]["error"]  # names the file
    done = out / "cmu-1-small-region"
    summary = json.loads((done / "summary.json").read_text())
    assert summary["chunks"]["with_tissue"] > 0 and 0.25 < summary["tissue_fraction"] < 0.55
    assert set(summary["tissue_classes"]["tissue"]) >= {"stroma", "adipose"}
    array = zarr.open_array(str(done / "nuclei.zarr"), mode="r")
    scale = summary["mpp_level0"] / 0.5  # the output grid is at 0.5 um/px; the slide at 0.499
    assert abs(summary["mpp_level0"] - 0.499) < 1e-3
    assert array.dtype == np.uint8 and array.shape == (round(2967 * scale), round(2220 * scale))
    assert array.chunks == (256, 256)
    # no object probability where no tile ran: farther than a tile from the tissue mask
    mask = cv2.imread(str(done / "tissue_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    near = cv2.resize(mask.astype(np.uint8), array.shape[::-1], interpolation=cv2.INTER_NEAREST)
    near = cv2.dilate(near, np.ones((2 * 160 + 1, 2 * 160 + 1), np.uint8)) > 0  # tile + context + rounding
    assert (~near).any() and (array[:][~near] == 0).all()
    # the picture of the predictions as fine as the output grid up to thumbnail_size (512 in
    # the tiny config), a legend of the three instance tasks below it; the mask at 8 um/px
    picture = cv2.imread(str(done / "thumbnail.png"))[..., ::-1]
    assert picture.shape[1] == round(512 * 2220 / 2967) and picture.shape[0] > 512
    below = picture[512:].reshape(-1, 3)
    for colour in OUTLINE_COLOURS[:3]:
        assert (below == colour).all(axis=1).sum() >= 100  # its box in the legend
    assert max(mask.shape) == round(2967 * 0.499 / 8)
    for task in ("nuclei", "gland", "lumen"):
        assert validate_feature_collection(json.loads((done / f"{task}.geojson").read_text())) == []


def test_a_dry_run_checks_the_slides_and_counts_the_tiles_a_run_computes(tmp_path, tiny_checkpoint):
    """--dry-run: a line per slide (its size, resolution, tissue and tiles, or its error), the tiles a
    real run then computes, exit status 1 for a slide that would fail, nothing written; a checkpoint
    of another model fails it at once."""
    slides = [write_label_slide(tmp_path / f"s{k}.tiff", ellipses(300 + 100 * k, 400, 10, seed=k)) for k in range(2)]
    inputs = [*slides, tmp_path / "missing.svs", "--tissue", "all"]
    dry = infer(TINY, tiny_checkpoint, *inputs, "--dry-run")
    assert dry.returncode == 1, dry.stderr[-2000:]
    lines = dry.stdout.strip().splitlines()
    assert lines[0].split()[:12] == ["ok", "s0", "400", "x", "300", "px", "at", "0.5", "um/px,", "0.03", "mm2", "of"]
    assert lines[2].split()[:2] == ["failed", "missing"] and "slide not found" in lines[2]
    assert not list(tmp_path.glob("*/manifest.json"))
    real = infer(TINY, tiny_checkpoint, *inputs, "--out-dir", tmp_path / "out")
    done = manifest(tmp_path / "out")
    tiles = [int(line.split()[-2]) for line in lines[:2]]
    assert tiles == [done["s0"]["tiles"], done["s1"]["tiles"]] and min(tiles) > 0, real.stderr[-2000:]
    assert lines[-1] == f"3 slides: 2 ok, 1 failed; {sum(tiles)} tiles to run"
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, wrong)
    refused = infer(TINY, wrong, *inputs, "--dry-run")
    assert refused.returncode == 2 and str(wrong) in refused.stderr.strip().splitlines()[-1]


def test_output_piped_to_a_reader_that_stops_early_ends_quietly(tmp_path, tiny_checkpoint):
    """``infer_wsi.py --dry-run ... | head -1``: a closed pipe ends the tool as SIGPIPE ends other
    tools (status 141), not with a BrokenPipeError traceback."""
    slide = write_label_slide(tmp_path / "s.tiff", ellipses(300, 400, 10, seed=0))
    command = [sys.executable, str(ROOT / "tools" / "infer_wsi.py"), str(TINY), str(tiny_checkpoint), str(slide)]
    process = subprocess.Popen(
        [*command, "--dry-run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )
    process.stdout.close()  # the reader is gone before the tool prints
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141, stderr[-2000:]
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_plain_tiffs_and_missing_mpp(tmp_path, tiny_checkpoint):
    """Toy tiled TIFFs and the DICOM pair run with --mpp and --tissue all (they hold coloured boxes, not
    tissue); without --mpp a slide fails naming the fix."""
    if not SLIDES.is_dir():
        pytest.skip(f"shared slides not found at {SLIDES}")
    out = tmp_path / "out"
    result = infer(
        TINY,
        tiny_checkpoint,
        SLIDES / "boxes.tiff",
        SLIDES / "small_HE_levels.tiff",
        "--out-dir",
        out,
        "--mpp",
        "0.5",
        "--tissue",
        "all",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert {e["status"] for e in manifest(out).values()} == {"done"}
    without = infer(TINY, tiny_checkpoint, SLIDES / "boxes.tiff", "--out-dir", tmp_path / "no_mpp")
    assert without.returncode == 1
    error = manifest(tmp_path / "no_mpp")["boxes"]["error"]
    assert "boxes.tiff has no microns-per-pixel metadata (none, or outside 0.01-50.0 um/px" in error  # 72 dpi
    assert error.endswith("; pass --mpp")


def test_a_slide_far_coarser_than_the_model_fails_instead_of_being_upsampled(tmp_path):
    """A low-resolution export (or --mpp 25 meant as 0.25) would be run upsampled, in the square of
    the factor more tiles of blur: it fails saying so, unless wsi.max_upsampling allows it."""
    slide = write_label_slide(tmp_path / "export.tiff", np.zeros((24, 36), np.int32), mpp=20.0)
    entry = oracle_run(slide, tmp_path / "out")
    assert entry["status"] == "failed"
    assert (
        f"slide {slide} is 20 um/px (its metadata says), 40x coarser than the 0.5 um/px the model runs"
        in entry["error"]
    )
    assert "in 1,600 times the tiles" in entry["error"] and entry["error"].endswith(
        "--max-upsampling 40 runs it all the same"
    )
    assert not (tmp_path / "out" / "export").exists()
    assert oracle_run(slide, tmp_path / "allowed", max_upsampling=40)["status"] == "done"
    assert zarr.open_array(str(tmp_path / "allowed" / "export" / "nuclei.zarr"), mode="r").shape[:2] == (960, 1440)


def oracle_runner(model=None, device="cpu", **settings) -> SlideRunner:
    task_cfg = dict(nuclei=dict(kind="instance", band=3, postprocess="watershed", min_size=10))
    defaults = dict(
        tile=96, context=16, chunk=192, margin=48, batch_size=8, workers=0, thumbnail_size=256, tissue="all"
    )
    model = (model or GreyOracle()).to(device)
    return SlideRunner(model, build_tasks(task_cfg), WSISettings(**{**defaults, **settings}), torch.device(device))


def oracle_run(slide, out, resume=False, model=None, device="cpu", **settings):
    with oracle_runner(model, device, **settings) as runner:
        return runner.run(SlideInput(slide, slide.stem), out, resume=resume)


def oracle_outputs(slide, out, **settings) -> tuple[str, np.ndarray, dict]:
    """Run :func:`oracle_run` with ``settings``: the nuclei GeoJSON text, the nuclei raster and the summary."""
    assert oracle_run(slide, out, **settings)["status"] == "done"
    folder = out / slide.stem
    raster = zarr.open_array(str(folder / "nuclei.zarr"), mode="r")[:]
    return (folder / "nuclei.geojson").read_text(), raster, json.loads((folder / "summary.json").read_text())


def rasterise(features, shape) -> list[np.ndarray]:
    from skimage.draw import polygon

    masks = []
    for feature in features:
        ring = np.asarray(feature["geometry"]["coordinates"][0], np.float64)
        mask = np.zeros(shape, bool)
        # Vertices are pixel corners: a pixel belongs to the object when its centre is inside.
        rows, cols = polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)
        mask[rows, cols] = True
        masks.append(mask)
    return masks


@pytest.mark.parametrize("stride, margin", [(96, 48), (64, 48), (96, 16)])
def test_instances_cut_by_tile_and_chunk_borders_come_out_once_and_whole(tmp_path, stride, margin):
    """On a slide whose objects straddle tile and chunk borders, the GeoJSON holds exactly the true
    objects; also with a margin smaller than the objects (up to 34 px across), whose pieces are put
    together at the slide's end."""
    gt = ellipses(480, 640, 60, seed=3, borders=96)
    slide = write_label_slide(tmp_path / "labels.tiff", gt)
    threads = torch.get_num_threads()
    blend = "hann" if stride < 96 else "ones"
    entry = oracle_run(slide, tmp_path / "out", stride=stride, margin=margin, blend=blend, threads=1)
    assert entry["status"] == "done", entry
    summary = json.loads((tmp_path / "out" / "labels" / "summary.json").read_text())
    assert (summary["cut_objects"] > 0) == (margin < 34)
    assert sum(summary["counts"]["nuclei"].values()) == summary["instances_written"]["nuclei"] == 60
    assert torch.get_num_threads() == threads  # wsi.threads holds during the run only
    data = json.loads((tmp_path / "out" / "labels" / "nuclei.geojson").read_text())
    assert validate_feature_collection(data) == []
    masks = rasterise(data["features"], gt.shape)
    assert len(masks) == gt.max() == 60
    predicted = np.zeros(gt.shape, np.int32)
    for k, mask in enumerate(masks, start=1):
        assert not (predicted[mask] > 0).any(), "two outputs cover the same object"
        predicted[mask] = k
    pq = im.pq_from_stats(im.pq_stats(im.instance_overlap(gt, predicted)))
    assert pq["dq"] == 1.0 and pq["sq"] > 0.99  # every object once; outlines exact up to polygon rasterisation


def test_chunks_finished_in_worker_processes_are_the_same(tmp_path):
    """wsi.finish_workers: the objects, rasters, pictures and summary (the slide concluded in a
    finishing process too) equal those of the writer threads, objects cut by chunks included."""
    gt = ellipses(480, 640, 60, seed=4, borders=96)
    slide = write_label_slide(tmp_path / "labels.tiff", gt)
    outputs = {
        name: oracle_outputs(slide, tmp_path / name, finish_workers=workers, margin=16)
        for name, workers in (("threads", 0), ("processes", 2))
    }
    (text, raster, summary), (text_p, raster_p, summary_p) = outputs["threads"], outputs["processes"]
    assert len(json.loads(text)["features"]) == 60 and summary["cut_objects"] > 0
    assert text == text_p and np.array_equal(raster, raster_p)
    timings, timings_p = summary.pop("timings"), summary_p.pop("timings")
    assert summary == summary_p and timings.keys() == timings_p.keys()
    for picture in ("thumbnail.png", "tissue_mask.png"):
        assert (tmp_path / "threads" / "labels" / picture).read_bytes() == (
            tmp_path / "processes" / "labels" / picture
        ).read_bytes()


@pytest.mark.parametrize("mpp", [0.5, 0.55])
def test_tiles_kept_for_later_chunks_give_the_same_outputs(tmp_path, mpp):
    """wsi.tile_cache_mb: outputs equal those of computing every chunk's tiles, with any budget,
    also where the slide is resampled (0.55 um/px from a 0.5 um/px slide)."""
    gt = ellipses(480, 640, 60, seed=6, borders=96)
    slide = write_label_slide(tmp_path / "labels.tiff", gt)
    outputs, tiles = {}, {}
    # 0: every chunk computes its margin tiles again; 0.1 MB: a few tiles kept; 512: all, with
    # tiles read by 2 loader processes (the cache relies on chunks arriving in the plan's order)
    for budget in (0, 0.1, 512):
        workers = 2 if budget == 512 and mpp == 0.5 else 0
        text, raster, summary = oracle_outputs(
            slide, tmp_path / str(budget), tile_cache_mb=budget, mpp=mpp, workers=workers
        )
        tiles[budget] = (summary["tiles"], summary["tiles_shared"])
        outputs[budget] = (json.loads(text)["features"], raster)
    assert len(outputs[0][0]) == 60
    for budget in (0.1, 512):
        assert outputs[budget][0] == outputs[0][0] and np.array_equal(outputs[budget][1], outputs[0][1])
    if mpp != 0.5:
        return
    # 3 x 4 chunks of (at most) 2 x 2 tiles with one-tile margins: 117 tiles without the cache,
    # 35 (5 x 7, the slide's tiles) with it
    assert tiles[0] == (117, 0) and tiles[512] == (35, 117 - 35) and 35 < tiles[0.1][0] < 117
    assert all(computed + shared == 117 for computed, shared in tiles.values())


def test_stitching_in_its_own_thread_gives_the_same_outputs(tmp_path):
    """wsi.stitch_thread: the same rasters, objects and statistics as
    stitching in the model's thread, with tiles kept for later chunks and two loader processes."""
    gt = ellipses(480, 640, 60, seed=7, borders=96)
    slide = write_label_slide(tmp_path / "labels.tiff", gt)
    (text, raster, summary), (text_t, raster_t, summary_t) = (
        oracle_outputs(slide, tmp_path / str(in_thread), stitch_thread=in_thread, workers=2)
        for in_thread in (False, True)
    )
    assert len(json.loads(text)["features"]) == 60
    assert text_t == text and np.array_equal(raster_t, raster) and summary_t["counts"] == summary["counts"]


@pytest.mark.parametrize("device", ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
def test_batches_fill_across_chunks_and_every_tile_comes_back_once_in_order(device):
    # chunks of 5, 0 (all taken from the tile cache), 3, 7, 0 tiles; each tile's value is its
    # chunk * 100 + its row, so the rows put back from the pieces can be checked one by one
    sizes = {0: 5, 1: 0, 2: 3, 3: 7, 4: 0}
    chunks = [(k, torch.arange(n).view(n, 1, 1, 1) + 100 * k) for k, n in sizes.items()]
    for size in (1, 4, 16):
        seconds = {"input_wait_s": 0.0}
        batches = list(batches_across_chunks(chunks, size, seconds, torch.device(device)))
        assert all(len(images) == size for _, images in batches[:-1]) and len(batches[-1][1]) <= size
        assert all(images.device.type == device for _, images in batches if len(images))
        seen = {k: [] for k in sizes}
        order = []
        for pieces, images in batches:
            for piece in pieces:
                rows = images[piece.offset : piece.offset + piece.count].flatten().tolist()
                assert rows == [100 * piece.chunk + piece.start + i for i in range(piece.count)]
                assert piece.total == sizes[piece.chunk]
                seen[piece.chunk].extend(rows)
                order.append(piece.chunk)
        assert {k: len(v) for k, v in seen.items()} == sizes
        assert order == sorted(order) and set(order) == set(sizes)  # every chunk, in order


def test_the_summary_adds_up_the_chunks_areas_without_float_noise():
    from vismtl.wsi.outputs import merge_summaries

    entries = {(0, 0): {"area_um2": {"nuclei": 0.1}}, (0, 1): {"area_um2": {"nuclei": 0.2}}}
    assert merge_summaries(entries)["area_um2"] == {"nuclei": 0.3}  # not 0.30000000000000004


def test_the_picture_outlines_objects_in_green_and_leaves_the_rest():
    picture = np.full((12, 12, 3), 200, np.uint8)
    objects = np.zeros((12, 12), bool)
    objects[3:8, 2:9] = True
    out = outlined_objects(picture, {"nuclei": objects})[:12]  # above the legend
    border = objects.copy()
    border[4:7, 3:8] = False  # the rectangle's outermost ring of pixels
    assert (out[border] == (0, 255, 0)).all()
    assert (out[objects & ~border] == (150, 213, 150)).all()  # 0.75 x 200 + 0.25 x colour
    assert (out[~objects] == 200).all()


def test_each_instance_task_is_outlined_in_its_own_colour_and_named_in_a_legend():
    picture = np.full((40, 60, 3), 200, np.uint8)
    nuclei, glands = np.zeros((40, 60), bool), np.zeros((40, 60), bool)
    nuclei[5:10, 5:10] = True
    glands[20:35, 10:50] = True
    nuclei[25:28, 20:23] = True  # a nucleus inside a gland: the gland's outline is drawn last
    out = outlined_objects(picture, {"nuclei": nuclei, "gland": glands})
    green, gold = OUTLINE_COLOURS[:2]
    assert (out[5, 5:10] == green).all() and (out[20, 10:50] == gold).all() and (out[34, 10:50] == gold).all()
    assert (out[25, 20:23] == green).all()  # the nucleus's border, inside the gland (not its border)
    assert (out[:40][~(nuclei | glands)] == 200).all()  # the rest of the slide untouched
    legend_rows = out[40:]
    assert out.shape[1] == 60 and len(legend_rows) > 0
    boxes = {tuple(c) for c in legend_rows.reshape(-1, 3)}
    assert {green, gold} <= boxes and OUTLINE_COLOURS[2] not in boxes  # one line per task drawn


def test_the_picture_is_a_stored_pyramid_level_where_one_fits():
    from types import SimpleNamespace

    from vismtl.wsi.reader import Slide

    def stored_side(levels, downsamples, wanted):  # a Slide's level bookkeeping alone
        return Slide.stored_side(
            SimpleNamespace(width=levels[0], height=levels[1], level_downsamples=downsamples), wanted
        )

    pyramid = ((20000, 16000), [1.0, 4.0, 16.005, 64.1])
    assert stored_side(*pyramid, 2048) == 1249  # 20,000 / 16.005: read as stored, not from 5,000 px
    assert stored_side(*pyramid, 6000) == 5000
    assert stored_side((2220, 2967), [1.0], 2048) == 2048  # no level fits: resampled
    if SLIDES.is_dir():  # a real pyramid: the chosen side is read from its level (150 px), unresampled
        with Slide.open(SLIDES / "small_HE_levels.tiff") as real:
            side = real.stored_side(200)
            thumbnail, scale = real.thumbnail(side)
            assert side == 150 and max(thumbnail.shape[:2]) == side and real.best_level(scale) == 1


def test_drain_makes_room_when_any_write_ends_not_only_the_oldest():
    slow, done = Future(), [Future() for _ in range(3)]
    for future in done:
        future.set_result(None)
    timer = threading.Timer(3.0, slow.set_result, (None,))  # ends a drain that waits for the oldest
    timer.start()
    started = time.perf_counter()
    try:
        assert drain([slow, *done], keep=1) == [slow]
        assert time.perf_counter() - started < 1.0
    finally:
        timer.cancel()
    failed = Future()
    failed.set_exception(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):  # a writer's error surfaces at once
        drain([Future(), failed], keep=5)


def test_the_batch_size_changes_no_output(tmp_path):
    """Batches of 1, 3 and 64 tiles (filled across chunks) give the same objects and rasters."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=8, borders=96))
    outputs = {batch: oracle_outputs(slide, tmp_path / str(batch), batch_size=batch) for batch in (1, 3, 64)}
    assert len(json.loads(outputs[1][0])["features"]) == 60
    for batch in (3, 64):
        assert outputs[batch][0] == outputs[1][0] and np.array_equal(outputs[batch][1], outputs[1][1])


def test_slides_in_a_batch_overlap_and_each_gives_what_it_gives_alone(tmp_path, monkeypatch):
    """run_many prepares the next slide and concludes the last one while a slide's tiles run (from
    its first batch on); a failing slide in the middle is recorded and the others
    give the same outputs, summaries' counts and entries as one run each."""

    slides = [
        write_label_slide(tmp_path / f"slide{k}.tiff", ellipses(288, 384, 20, seed=k, borders=96)) for k in range(3)
    ]
    inputs = [SlideInput(slides[0], "slide0"), SlideInput(tmp_path / "missing.tiff", "missing")]
    inputs += [SlideInput(slide, slide.stem) for slide in slides[1:]]
    events, lock = [], threading.Lock()

    def logged(name, method):
        def wrapper(self, job, *args):
            with lock:
                events.append((name, job.input.name))
            result = method(self, job, *args)
            with lock:
                events.append((f"{name} ended", job.input.name))
            return result

        return wrapper

    for name in ("_prepare", "_tiles", "_conclude"):
        monkeypatch.setattr(SlideRunner, name, logged(name, getattr(SlideRunner, name)))

    # a reading process and finishing processes, as on a GPU: the reading process serves every
    # slide, and a slide's last chunks are written by the finishing processes while the next
    # slide's first are
    def taken(slides):  # read lazily, as a rank takes its slides from the shared claims
        for slide in slides:
            with lock:
                events.append(("taken", slide.name))
            yield slide

    with oracle_runner(workers=1, finish_workers=2) as runner:
        calls, call = [], runner.finisher.call

        def recorded(doing, fn, *args, here=False):
            calls.append((doing.split("'")[0], here))
            return call(doing, fn, *args, here=here)

        runner.finisher.call = recorded
        entries = list(runner.run_many(taken(inputs), tmp_path / "batch", resume=False))
        batch_calls = list(calls)
        alone = {s.stem: runner.run(SlideInput(s, s.stem), tmp_path / "alone", resume=False) for s in slides}

    assert [e["name"] for e in entries] == ["slide0", "missing", "slide1", "slide2"]
    # the first slide is prepared in the batch's thread; the others, beside a slide's tiles, in a
    # finishing process, and each is concluded in one
    prepared = [(doing, here) for doing, here in batch_calls if doing.startswith("preparing")]
    assert prepared == [("preparing slide0", True)] + [
        (f"preparing {n}", False) for n in ("missing", "slide1", "slide2")
    ]
    concluded = sorted(doing for doing, here in batch_calls if doing.startswith("putting") and not here)
    assert concluded == ["putting slide0", "putting slide1", "putting slide2"]
    assert entries[1]["status"] == "failed" and "slide not found" in entries[1]["error"]
    for entry in entries[:1] + entries[2:]:
        name = entry["name"]
        assert entry["status"] == "done" and entry["tiles"] == alone[name]["tiles"] > 0
        batch, single = tmp_path / "batch" / name, tmp_path / "alone" / name
        assert (batch / "nuclei.geojson").read_text() == (single / "nuclei.geojson").read_text()
        raster = zarr.open_array(str(batch / "nuclei.zarr"), mode="r")[:]
        assert np.array_equal(raster, zarr.open_array(str(single / "nuclei.zarr"), mode="r")[:])
        summary = json.loads((batch / "summary.json").read_text())
        assert summary["counts"] == json.loads((single / "summary.json").read_text())["counts"]
        t = summary["timings"]
        assert abs(t["wall_s"] - (t["prepare_s"] + t["tiles_s"] + t["conclude_s"])) < 0.005
        assert t["drain_s"] <= t["tiles_s"]
        assert 0 < t["gap_late_s"] == t["gap_s"] < t["tiles_s"]  # on the CPU the model's thread is the late one

    batch_events = events[: events.index(("_conclude ended", "slide2")) + 1]
    at = {event: k for k, event in enumerate(batch_events)}
    for this, following in (("slide0", "missing"), ("slide1", "slide2")):
        # the next slide is taken and prepared while this one's tiles run, not before
        assert (
            at[("_tiles", this)] < at[("taken", following)] < at[("_prepare", following)] < at[("_tiles ended", this)]
        )
    # slide1's conclusion (its last writes, GeoJSON, pictures) runs beside slide2's tiles
    assert at[("_tiles", "slide2")] < at[("_conclude", "slide1")] < at[("_tiles ended", "slide2")]
    # and nothing is left running
    assert not [t for t in threading.enumerate() if t.name.startswith(("vismtl-slide", "vismtl-writer"))]


class SlowOracle(GreyOracle):
    """GreyOracle taking ``seconds`` per batch, as a model that costs something."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        time.sleep(self.seconds)
        return super().forward(image)


class OutOfMemoryOracle(GreyOracle):
    """GreyOracle whose third batch runs out of GPU memory, as torch reports it."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.batches += 1
        if self.batches == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return super().forward(image)


def test_a_slide_out_of_gpu_memory_fails_saying_what_to_do_and_the_batch_goes_on(tmp_path, caplog):
    """Out of GPU memory (several engines sharing a GPU make it likelier), the slide's entry and log
    line say what to lower; the next slide of the batch is done."""
    slides = [write_label_slide(tmp_path / f"s{k}.tiff", ellipses(200, 260, 5, seed=k, borders=96)) for k in (0, 1)]
    with oracle_runner(OutOfMemoryOracle(), batch_size=2) as runner:
        entries = list(runner.run_many([SlideInput(s, s.stem) for s in slides], tmp_path / "out", resume=False))
    assert [e["status"] for e in entries] == ["failed", "done"]
    advice = "out of GPU memory (lower --batch-size or --tile-cache-mb, or start fewer processes per GPU)"
    assert entries[0]["error"] == f"OutOfMemoryError: {advice}: CUDA out of memory. Tried to allocate 2.00 GiB."
    assert any(advice in r.getMessage() and "s0.tiff" in r.getMessage() for r in caplog.records)


def test_the_next_slide_s_first_chunks_are_read_while_a_slide_s_tiles_run(tmp_path, monkeypatch):
    """In a batch, the next slide's reading starts once it is prepared, beside this slide's tiles:
    its first batch does not wait for its first reads (the GPU's idle start of every slide)."""
    from vismtl.wsi.batching import ChunkTiles

    slides = [write_label_slide(tmp_path / f"s{k}.tiff", ellipses(288, 384, 20, seed=k, borders=96)) for k in (0, 1)]
    first_read, tiles_ended = {}, {}
    read, run_tiles = ChunkTiles.__getitem__, SlideRunner._tiles

    def reading(self, index):
        first_read.setdefault(self.path.stem, time.perf_counter())
        return read(self, index)

    def timed_tiles(self, job, *args):
        run_tiles(self, job, *args)
        tiles_ended[job.input.name] = time.perf_counter()

    monkeypatch.setattr(ChunkTiles, "__getitem__", reading)
    monkeypatch.setattr(SlideRunner, "_tiles", timed_tiles)
    with oracle_runner(model=SlowOracle(0.5)) as runner:  # a reading thread; 2 batches a slide
        entries = list(runner.run_many([SlideInput(s, s.stem) for s in slides], tmp_path / "out", resume=False))
    assert [e["status"] for e in entries] == ["done", "done"]
    assert first_read["s1"] < tiles_ended["s0"]
    assert not [t for t in threading.enumerate() if t.name == "vismtl-reader"]


def test_a_failing_source_of_slides_does_not_fail_the_slide_being_run(tmp_path):
    """The next slide is taken while this one's tiles run; if taking it fails (a rank's claims folder
    gone), this slide still completes, and the error comes after its entry."""
    slide = write_label_slide(tmp_path / "s.tiff", ellipses(288, 384, 20, seed=1, borders=96))

    def source():
        yield SlideInput(slide, "s")
        raise OSError("the claims folder is gone")

    with oracle_runner() as runner:
        batch = runner.run_many(source(), tmp_path / "out", resume=False)
        assert next(batch)["status"] == "done"
        with pytest.raises(OSError, match="claims folder is gone"):
            next(batch)


def test_a_batch_keeps_no_slide_it_has_concluded(tmp_path, monkeypatch):
    """Each slide's prepared state (its pictures: megabytes) is gone once its entry is out."""
    slides = [write_label_slide(tmp_path / f"s{k}.tiff", ellipses(192, 288, 8, seed=k, borders=96)) for k in range(3)]
    from vismtl.wsi import engine

    alive, prepared = {}, engine.prepare_slide

    def tracked(tasks, setup, slide_input, *args):
        state = prepared(tasks, setup, slide_input, *args)
        alive[slide_input.name] = weakref.ref(state)
        return state

    monkeypatch.setattr(engine, "prepare_slide", tracked)
    with oracle_runner() as runner:
        for entry in runner.run_many([SlideInput(s, s.stem) for s in slides], tmp_path / "out", resume=False):
            gc.collect()
            assert entry["status"] == "done" and alive[entry["name"]]() is None


def test_a_reading_process_that_dies_fails_its_slide_and_the_next_slide_gets_new_ones(tmp_path):
    slides = [write_label_slide(tmp_path / f"s{k}.tiff", ellipses(288, 384, 20, seed=k, borders=96)) for k in range(2)]
    with oracle_runner(workers=1) as runner:
        pool = runner._readers().start()
        os.kill(pool.submit(os.getpid).result(), signal.SIGKILL)
        entries = list(runner.run_many([SlideInput(s, s.stem) for s in slides], tmp_path / "out", resume=False))
    assert entries[0]["status"] == "failed", entries[0]
    assert f"a reading process died while reading {slides[0]}" in entries[0]["error"]
    assert entries[1]["status"] == "done" and entries[1]["tiles"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("stride", [96, 64])
def test_outputs_made_on_the_gpu_equal_those_made_on_the_cpu(tmp_path, stride):
    """The model, the stitching (one blending launch per batch) and the cues on a GPU, a reading
    process (its tiles copied out of shared memory into pinned memory) and 2 finishing
    processes, as a GPU's defaults have them: disjoint tiles (copied without weights) give the
    CPU's objects and rasters bit for bit; overlapping ones (atomic float sums, whose order
    differs) the same objects."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=10, borders=96))
    blend = "hann" if stride < 96 else "ones"
    cpu = oracle_outputs(slide, tmp_path / "cpu", stride=stride, blend=blend)
    gpu = oracle_outputs(
        slide, tmp_path / "gpu", stride=stride, blend=blend, device="cuda", workers=1, finish_workers=2
    )
    assert len(json.loads(cpu[0])["features"]) == len(json.loads(gpu[0])["features"]) == 60
    if blend == "ones":
        assert gpu[0] == cpu[0] and np.array_equal(gpu[1], cpu[1])
    else:
        assert np.abs(gpu[1].astype(int) - cpu[1].astype(int)).max() <= 1


def test_amp_runs_the_model_under_bfloat16_autocast_on_the_cpu(tmp_path):
    """wsi.amp (--amp) on the CPU: a convolution in the model's forward computes in bfloat16; the
    oracle's objects (elementwise, which autocast leaves in float32) stay the same."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=9, borders=96))
    conv, outputs = torch.nn.Conv2d(3, 1, 1), {}
    for amp in (False, True):
        oracle, dtypes = GreyOracle(), set()
        oracle.register_forward_hook(lambda module, args, output, seen=dtypes: seen.add(conv(args[0].float()).dtype))
        assert oracle_run(slide, tmp_path / str(amp), model=oracle, amp=amp)["status"] == "done"
        assert dtypes == {torch.bfloat16 if amp else torch.float32}
        outputs[amp] = (tmp_path / str(amp) / "labels" / "nuclei.geojson").read_text()
    assert len(json.loads(outputs[True])["features"]) == 60 and outputs[True] == outputs[False]


def test_a_compiled_model_compiles_one_graph_for_the_run_and_gives_the_same_outputs(tmp_path, monkeypatch):
    """wsi.compile: torch.compile once, every batch (the short last one padded) of one shape and
    layout, so one graph; the objects and rasters of the eager model. Dynamo traces here, but
    the graph runs eagerly (a counting backend): inductor's compile is the benchmark's."""
    graphs, compile_model = [], torch.compile

    def counting(model, **options):
        def backend(graph, inputs):
            graphs.append([(tuple(t.shape), t.stride()) for t in inputs if isinstance(t, torch.Tensor)])
            return graph.forward

        return compile_model(model, backend=backend, **options)

    monkeypatch.setattr(torch, "compile", counting)
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=11, borders=96))
    eager = oracle_outputs(slide, tmp_path / "eager", batch_size=8)
    compiled = oracle_outputs(slide, tmp_path / "compiled", batch_size=8, compile=True)
    assert compiled[2]["tiles"] % 8 != 0  # a short last batch, padded
    assert len(graphs) == 1 and graphs[0][0][0] == (8, 3, 128, 128)
    assert compiled[0] == eager[0] and np.array_equal(compiled[1], eager[1])


def test_a_model_that_fails_to_compile_runs_uncompiled_with_a_warning(tmp_path, monkeypatch, caplog):
    def failing(model, **options):
        def broken(images):
            raise RuntimeError("inductor: no C++ compiler found\nmore lines")

        return broken

    monkeypatch.setattr(torch, "compile", failing)
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=12, borders=96))
    eager = oracle_outputs(slide, tmp_path / "eager")
    with caplog.at_level("WARNING", logger="vismtl"):
        fallback = oracle_outputs(slide, tmp_path / "fallback", compile=True)
    assert (
        "torch.compile failed, the model runs uncompiled: RuntimeError: inductor: no C++ compiler found" in caplog.text
    )
    assert caplog.text.count("torch.compile failed") == 1  # once, not per batch
    assert fallback[0] == eager[0] and np.array_equal(fallback[1], eager[1])


def test_a_cuda_graph_asked_for_on_the_cpu_is_said_once_and_changes_nothing(tmp_path, caplog):
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(288, 384, 20, seed=13, borders=96))
    eager = oracle_outputs(slide, tmp_path / "eager")
    with caplog.at_level("WARNING", logger="vismtl"):
        asked = oracle_outputs(slide, tmp_path / "graph", cuda_graph=True)
    assert caplog.text.count("wsi.cuda_graph needs a CUDA device; the model runs as it is on cpu") == 1
    assert asked[0] == eager[0] and np.array_equal(asked[1], eager[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("batch_size", [8, 6])
def test_a_model_replayed_as_a_cuda_graph_gives_the_same_outputs(tmp_path, batch_size, caplog):
    """wsi.cuda_graph: batches (the short last one padded) replayed from one graph give the objects
    and rasters of the model run as it is, bit for bit on disjoint tiles."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=14, borders=96))
    plain = oracle_outputs(slide, tmp_path / "plain", device="cuda", batch_size=batch_size)
    with caplog.at_level("WARNING", logger="vismtl"):
        graphed = oracle_outputs(slide, tmp_path / "graph", device="cuda", batch_size=batch_size, cuda_graph=True)
    assert "CUDA graph" not in caplog.text  # captured, not run as it is
    assert graphed[2]["tiles"] % batch_size != 0  # a short last batch, padded
    assert graphed[0] == plain[0] and np.array_equal(graphed[1], plain[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_nuclei_decided_on_the_gpu_give_the_same_outputs(tmp_path):
    """wsi.decide_on_gpu: the finishing processes get the nuclei's ids made beside the model; the
    objects and rasters are those decided in the processes, bit for bit."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=15, borders=96))
    there = oracle_outputs(slide, tmp_path / "processes", device="cuda", finish_workers=2)
    here = oracle_outputs(slide, tmp_path / "gpu", device="cuda", finish_workers=2, decide_on_gpu=True)
    assert len(json.loads(here[0])["features"]) == 60
    assert here[0] == there[0] and np.array_equal(here[1], there[1])


@pytest.mark.parametrize("native, amp, said", [(False, True, "2-4x slower here"), (True, False, "twice as fast")])
def test_the_tool_says_whether_amp_pays_on_this_cpu(tmp_path, tiny_checkpoint, monkeypatch, caplog, native, amp, said):
    """Emulated bfloat16 (no BF16 instructions) ran the histology model at 0.24-0.61x float32's rate."""
    from vismtl.engine import precision
    from vismtl.wsi import batch

    monkeypatch.setattr(precision, "native_bfloat16", lambda: native)
    slide = write_label_slide(tmp_path / "labels.tiff", np.zeros((128, 128), np.int32))
    with caplog.at_level(logging.INFO, logger="vismtl"):
        batch.infer_slides(TINY, tiny_checkpoint, [slide], tmp_path / "out", options={"amp": amp, "tissue": "all"})
    assert said in caplog.text


def test_native_bfloat16_is_unknown_where_pytorch_cannot_tell(monkeypatch):
    import platform

    from vismtl.engine.precision import native_bfloat16

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert native_bfloat16() is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert native_bfloat16() is None  # neither the hint nor the warning
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")  # ARM's bfloat16 is not AVX-512's
    assert native_bfloat16() is None


def test_an_error_in_the_stitching_thread_fails_the_slide_and_stops_the_thread(tmp_path, monkeypatch):
    from vismtl.wsi import stitcher

    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=7, borders=96))
    calls, add = [], stitcher.ChunkStitcher.add

    def failing_add(self, start, activated):
        calls.append(start)
        if len(calls) == 3:
            raise ValueError("a broken canvas")
        return add(self, start, activated)

    monkeypatch.setattr(stitcher.ChunkStitcher, "add", failing_add)
    before = {t.name for t in threading.enumerate()}
    entry = oracle_run(slide, tmp_path / "out", stitch_thread=True)
    assert entry["status"] == "failed" and entry["error"] == "ValueError: a broken canvas"
    assert "vismtl-stitch" not in {t.name for t in threading.enumerate()} - before


def test_a_partial_run_with_instances_in_the_former_format_is_not_continued(tmp_path):
    from vismtl.wsi.outputs import SlideOutputs
    from vismtl.wsi.tiling import TileLayout

    outputs = SlideOutputs(tmp_path / "slide", TileLayout(100, 100), {"model": "m"})
    assert outputs.prepare(resume=False) == {}
    (tmp_path / "slide" / ".parts" / "nuclei").mkdir(parents=True)
    (tmp_path / "slide" / ".parts" / "nuclei" / "0_0.json").write_text("[]")  # instance records, not Features
    with pytest.raises(RuntimeError, match="older vismtl; remove the folder or drop --resume"):
        outputs.prepare(resume=True)


def test_a_partial_run_whose_chunks_kept_another_format_is_not_continued(tmp_path):
    """Before pieces (2026-11-27) a chunk emitted whole the objects crossing its border that it owned:
    continued now, such an object would come out twice; until 2026-11-28 a piece held its chunk's
    type, not its pixels' type votes. A fresh run marks its format."""
    from vismtl.wsi.outputs import PARTS_FORMAT, SlideOutputs
    from vismtl.wsi.tiling import TileLayout

    outputs = SlideOutputs(tmp_path / "slide", TileLayout(100, 100), {"model": "m"})
    assert outputs.prepare(resume=False) == {}
    outputs.journal.record({"chunk": [0, 0]})
    assert outputs.prepare(resume=True).keys() == {(0, 0)}  # marked: continued
    (tmp_path / "slide" / PARTS_FORMAT).write_text("pieces")  # the pieces of 2026-11-27
    with pytest.raises(RuntimeError, match="older vismtl; remove the folder or drop --resume"):
        outputs.prepare(resume=True)
    (tmp_path / "slide" / PARTS_FORMAT).unlink()
    with pytest.raises(RuntimeError, match="older vismtl; remove the folder or drop --resume"):
        outputs.prepare(resume=True)


RESUME_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_wsi_engine import oracle_runner
from vismtl.wsi.inputs import SlideInput
torch.set_num_threads(1)
slides = [SlideInput(Path(p), Path(p).stem) for p in {slides!r}]
with oracle_runner() as runner:
    entries = list(runner.run_many(slides, Path({out!r}), resume=True))
assert [e["status"] in ("done", "skipped") for e in entries] == [True] * len(slides), entries
"""


def test_killed_runs_resume_to_identical_outputs(tmp_path):
    """SIGKILL at random moments (5 trials) of a batch of two slides, which overlap, rerun with resume:
    rasters and objects equal those of uninterrupted runs."""
    truths = {
        "labels": ellipses(384, 576, 40, seed=5, borders=96),
        "second": ellipses(192, 288, 10, seed=6, borders=96),
    }
    slides = [write_label_slide(tmp_path / f"{name}.tiff", gt) for name, gt in truths.items()]
    reference = tmp_path / "reference"
    for slide in slides:
        assert oracle_run(slide, reference)["status"] == "done"
    rng = np.random.default_rng(0)
    unfinished = 0
    for trial in range(5):
        out = tmp_path / f"trial{trial}"
        script = tmp_path / f"run{trial}.py"
        script.write_text(
            RESUME_SCRIPT.format(tests=str(ROOT / "tests"), slides=[str(s) for s in slides], out=str(out))
        )
        process = subprocess.Popen([sys.executable, str(script)], env=subprocess_env(), stderr=subprocess.DEVNULL)
        # killed once the batch has begun (the imports take seconds; the two slides ~0.4 s here)
        deadline = time.monotonic() + 120
        while not (out / "labels" / "run.json").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.4)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        unfinished += not (out / "second" / "summary.json").exists()
        resumed = subprocess.run([sys.executable, str(script)], env=subprocess_env(), capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        for name, gt in truths.items():
            a = zarr.open_array(str(reference / name / "nuclei.zarr"), mode="r")[:]
            b = zarr.open_array(str(out / name / "nuclei.zarr"), mode="r")[:]
            np.testing.assert_array_equal(a, b)
            objects = [json.loads((d / name / "nuclei.geojson").read_text())["features"] for d in (reference, out)]
            assert sorted(f["id"] for f in objects[0]) == sorted(f["id"] for f in objects[1])
            assert len(objects[1]) == gt.max()
            assert not list((out / name).rglob("*.tmp"))  # no half-written file survives
    assert unfinished >= 1  # some kill landed before the batch was done


def test_only_damaged_tiles_are_left_white_not_a_missing_file_or_a_file_system_error(tmp_path, monkeypatch):
    from vismtl.wsi.reader import Slide, SlideError
    from vismtl.wsi.reading import ChunkReader

    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 30, seed=3, borders=96))
    damage_tile(slide, 3)
    corners = np.array([[0, 0], [0, 300], [300, 0]])  # the third reads the damaged stored tile
    tiles, unreadable = ChunkReader(slide).read(corners, 128, 1.0)
    assert [index for index, _ in unreadable] == [2] and (tiles[2] == 255).all() and not (tiles[0] == 255).all()
    with pytest.raises(SlideError, match="slide not found"):
        ChunkReader(tmp_path / "gone.tiff").read(corners, 128, 1.0)

    def share_gone(self, *args):
        raise SlideError("cannot read region") from OSError(5, "Input/output error")

    monkeypatch.setattr(Slide, "read", share_gone)
    with pytest.raises(SlideError, match="cannot read region"):
        ChunkReader(slide).read(corners, 128, 1.0)


def test_regions_drawn_in_qupath_or_a_mask_image_choose_the_tiles(tmp_path):
    """--mask-dir: <slide>.geojson (annotations as QuPath exports them, with a hole) or <slide>.png
    overrides the automatic mask; only tiles near the regions run, and both forms of the same mask
    give the same outputs. A file without regions fails the slide naming it."""
    from vismtl.io import write_png_gray
    from vismtl.wsi.tissue import load_geojson_mask, same_proportions

    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 40, seed=7, borders=96))
    square = [[0, 0], [288, 0], [288, 240], [0, 240], [0, 0]]  # level-0 px (0.5 um/px: the output grid)
    hole = [[96, 80], [192, 80], [192, 160], [96, 160], [96, 80]]
    annotation = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square, hole]}}
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [600, 400]}}  # ignored
    drawn, painted = tmp_path / "drawn", tmp_path / "painted"
    drawn.mkdir(), painted.mkdir()
    (drawn / "labels.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [annotation, point]}))
    runs = {}
    for folder in (drawn, painted):
        runs[folder.name] = oracle_outputs(slide, tmp_path / f"out_{folder.name}", tissue="auto", mask_dir=str(folder))
        mask = cv2.imread(str(tmp_path / f"out_{folder.name}" / "labels" / "tissue_mask.png"), cv2.IMREAD_GRAYSCALE)
        if folder is drawn:  # the same mask, as an image, for the second run
            scale = mask.shape[1] / 640
            expected = load_geojson_mask(drawn / "labels.geojson", mask.shape, scale)
            np.testing.assert_array_equal(mask > 0, expected)
            assert expected.any() and not expected[round(120 * scale), round(144 * scale)]  # the hole
            write_png_gray(painted / "labels.png", expected.astype(np.uint8) * 255)
    assert runs["drawn"][0] == runs["painted"][0] and np.array_equal(runs["drawn"][1], runs["painted"][1])
    raster = runs["drawn"][1]
    assert raster[:240, :288].any() and not raster[:, 288 + 2 * 96 :].any() and not raster[240 + 2 * 96 :].any()
    (drawn / "labels.geojson").write_text('{"type": "FeatureCollection", "features": [' + json.dumps(point) + "]}")
    entry = oracle_run(slide, tmp_path / "out_bad", tissue="auto", mask_dir=str(drawn))
    assert entry["status"] == "failed"
    assert f"cannot read tissue mask {drawn / 'labels.geojson'}: no Polygon or MultiPolygon in it" in entry["error"]
    # regions that miss the slide (another slide's, or in microns) and a mask image of other
    # proportions (another slide's, or a crop) each fail naming the file, neither "no tissue" nor stretched
    elsewhere = {"type": "Polygon", "coordinates": [[[x + 5000, y] for x, y in square]]}
    (drawn / "labels.geojson").write_text(json.dumps(elsewhere))
    entry = oracle_run(slide, tmp_path / "out_elsewhere", tissue="auto", mask_dir=str(drawn))
    assert entry["status"] == "failed"
    assert f"tissue mask {drawn / 'labels.geojson'}: its region lies outside the slide (640 x 480 px)" in entry["error"]
    write_png_gray(painted / "labels.png", np.full((48, 128), 255, np.uint8))  # 8:3, the slide 4:3
    entry = oracle_run(slide, tmp_path / "out_wide", tissue="auto", mask_dir=str(painted))
    assert entry["status"] == "failed"
    assert (
        f"tissue mask {painted / 'labels.png'} is 128 x 48 px, 2.67 times as wide as high, the slide 1.33"
        in entry["error"]
    )
    assert same_proportions((69, 93), (555, 742))  # a 2,967 x 2,220 slide's mask exported at 1/32, rounded
    assert not same_proportions((69, 99), (555, 742))


@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_tile_is_left_white_and_reported_the_rest_of_the_slide_is_computed(tmp_path, monkeypatch, workers):
    """One stored tile of the slide file does not decode: the model tiles whose reads cover it are
    left white and listed, every other pixel is what the undamaged slide gives, and the slide is done
    (with a reading thread and with a reading process)."""
    truth = ellipses(480, 640, 30, seed=3, borders=96)
    (tmp_path / "clean").mkdir()
    (tmp_path / "damaged").mkdir()
    clean = write_label_slide(tmp_path / "clean" / "labels.tiff", truth)
    damaged = write_label_slide(tmp_path / "damaged" / "labels.tiff", truth)
    damage_tile(damaged, 3)  # stored 256 px tiles: the one at rows 256-480, columns 0-256
    reference = oracle_outputs(clean, tmp_path / "out_clean", workers=workers)
    entry = oracle_run(damaged, tmp_path / "out", workers=workers)

    # model tiles of 96 px on a 96 px grid, read with 16 px of context: those whose reads meet the damage
    white = {(y, x) for y in range(0, 480, 96) for x in range(0, 640, 96) if y + 112 > 256 and x - 16 < 256}
    assert entry["status"] == "done" and entry["unreadable_tiles"] == len(white) == 9, entry
    folder = tmp_path / "out" / "labels"
    lines = [json.loads(line) for line in (folder / "unreadable.jsonl").read_text().splitlines()]
    assert {tuple(line["tile"]) for line in lines} == white
    assert all("labels.tiff" in line["error"] and "LIBDEFLATE_BAD_DATA" in line["error"] for line in lines)
    raster = zarr.open_array(str(folder / "nuclei.zarr"), mode="r")[:]
    inside = np.zeros(raster.shape, bool)
    for y, x in white:
        inside[y : y + 96, x : x + 96] = True
    np.testing.assert_array_equal(raster[~inside], reference[1][~inside])
    assert (raster[inside] != reference[1][inside]).any()
    assert json.loads((folder / "summary.json").read_text())["unreadable_tiles"] == 9
    # killed before its summary, then resumed: that run reads no chunk, and still reports the tiles
    from vismtl.wsi.outputs import SlideOutputs

    def killed(self, summary):
        raise RuntimeError("killed")

    real = SlideOutputs.write_summary
    monkeypatch.setattr(SlideOutputs, "write_summary", killed)
    assert oracle_run(damaged, tmp_path / "killed", workers=workers)["status"] == "failed"
    monkeypatch.setattr(SlideOutputs, "write_summary", real)
    resumed = oracle_run(damaged, tmp_path / "killed", resume=True, workers=workers)
    assert resumed["status"] == "done" and resumed["tiles"] == entry["tiles"] and resumed["unreadable_tiles"] == 9


@pytest.mark.parametrize(
    "sent, status, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]
)
def test_ctrl_c_ends_the_run_with_one_line_and_resume_goes_on(tmp_path, tiny_checkpoint, sent, status, said):
    """Ctrl-C (SIGINT), or SIGTERM (a scheduler's time limit: Python's default ends at once, silently),
    once the first chunk is journaled: exit status 130 or 143, one line saying how to go on (no
    traceback), every process gone; the same command with --resume finishes from the chunks written."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(1024, 1536, 80, seed=4, borders=96))
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "tools" / "infer_wsi.py"), str(TINY), str(tiny_checkpoint), str(slide)]
    command += ["--out-dir", str(out), "--tissue", "all", "--batch-size", "1"]
    # Ctrl-C at its default in the tool, also where the tests run as a background job of a shell
    # script, which ignores it and hands that down (Python then never raises KeyboardInterrupt)
    default_sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    process = subprocess.Popen(
        command, env=subprocess_env(), stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    journal, deadline = out / "labels" / "journal.jsonl", time.monotonic() + 120
    while not (journal.is_file() and journal.read_text()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        f"{said}: the chunks written are kept; rerun the same command with --resume to go on"
    )
    assert "Traceback" not in stderr
    assert not (out / "labels" / "summary.json").exists()  # the slide was not finished
    resumed = subprocess.run([*command, "--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    chunks = json.loads((out / "labels" / "summary.json").read_text())["chunks"]
    assert 0 < chunks["resumed"] < chunks["total"]


def test_a_full_disk_stops_the_batch_in_one_line_and_resume_finishes_it(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """The third chunk written finds the disk full: not that slide's fault, and every later write
    would fail too, so the batch stops there with one line naming the slide's folder and how to go
    on (exit status 1), not a failed entry for each slide; with space again, --resume gives what
    an uninterrupted run gives."""
    from vismtl.wsi import outputs

    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import infer_wsi

    first = write_label_slide(tmp_path / "first.tiff", ellipses(1024, 1536, 80, seed=4, borders=96))
    second = shutil.copyfile(first, tmp_path / "second.tiff")
    run = [str(TINY), str(tiny_checkpoint), str(first), str(second), "--tissue", "all"]
    assert infer_wsi.main([*run, "--out-dir", str(tmp_path / "whole")]) == 0
    written, write_chunk_files = [], outputs.write_chunk_files

    def until_the_disk_is_full(files, rasters, parts):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_chunk_files(files, rasters, parts)
        written.append(files.chunk)

    monkeypatch.setattr(outputs, "write_chunk_files", until_the_disk_is_full)
    out = tmp_path / "out"
    capsys.readouterr()
    assert infer_wsi.main([*run, "--out-dir", str(out)]) == 1
    stderr = capsys.readouterr().err
    assert stderr.strip().splitlines()[-1] == (
        f"error: {os.strerror(errno.ENOSPC)} writing {out / 'first'}: free some space there; "
        "the chunks written are kept; rerun the same command with --resume to go on"
    )
    assert "Traceback" not in stderr and "failed" not in stderr
    assert not (out / "manifest.json").exists() and not (out / "second" / "journal.jsonl").exists()
    monkeypatch.setattr(outputs, "write_chunk_files", write_chunk_files)
    assert infer_wsi.main([*run, "--out-dir", str(out), "--resume"]) == 0
    assert {name: e["status"] for name, e in manifest(out).items()} == {"first": "done", "second": "done"}
    chunks = json.loads((out / "first" / "summary.json").read_text())["chunks"]
    assert 2 <= chunks["resumed"] < chunks["total"]
    for name in ("first", "second"):
        for task in ("nuclei", "nuclei_type", "gland"):
            resumed, whole = (
                zarr.open_array(str(d / name / f"{task}.zarr"), mode="r")[:] for d in (out, tmp_path / "whole")
            )
            assert np.array_equal(resumed, whole), (name, task)
        for geojson in ("nuclei.geojson", "gland.geojson"):
            assert (out / name / geojson).read_text() == (tmp_path / "whole" / name / geojson).read_text()


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_writes(
    tmp_path, tiny_checkpoint, capsys, monkeypatch
):
    """Two runs writing to one folder at once interleave their chunks and journals, and each says
    its slides are done while objects are missing from them (a run started twice over the Aperio
    slide lost 23 % of its nuclei). The second is refused before anything is written, naming the
    first; once that one has ended, even killed, a run goes ahead."""
    from vismtl.wsi import batch

    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import infer_wsi

    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(256, 256, 4, seed=1))
    out = tmp_path / "out"
    out.mkdir()
    run = [str(TINY), str(tiny_checkpoint), str(slide), "--tissue", "all", "--out-dir", str(out)]
    with folder_held_by_another_run(out) as pid:
        capsys.readouterr()
        assert infer_wsi.main(run) == 2
        line = f"error: another run is writing to {out} (pid {pid} on {socket.gethostname()}, since 20"
        assert capsys.readouterr().err.strip().startswith(line)
        assert not (out / "labels").exists()
    refused = []  # what another run is told while this one writes its last file
    write_slide_table = batch.write_slide_table
    monkeypatch.setattr(
        batch,
        "write_slide_table",
        lambda *a: (refused.append(lock_refused_to_another_process(out)), write_slide_table(*a)),
    )
    assert infer_wsi.main(run) == 0
    assert manifest(out)["labels"]["status"] == "done"
    assert refused[0].startswith(f"another run is writing to {out} (pid {os.getpid()} on ")
    assert lock_refused_to_another_process(out) == ""  # let go at the end


def test_a_resume_with_other_post_processing_or_precision_refuses_the_slide(tmp_path):
    """--resume skips a slide only when its outputs came from the same settings, tasks and weights; a
    finished slide made with another nuclei threshold or without autocast fails with one line, not
    "skipped" with stale objects."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(192, 288, 10, seed=6, borders=96))
    out = tmp_path / "out"
    assert oracle_run(slide, out)["status"] == "done"
    assert oracle_run(slide, out, resume=True)["status"] == "skipped"
    defaults = dict(tile=96, context=16, chunk=192, margin=48, batch_size=8, workers=0, tissue="all")
    for tasks, settings, change in (
        (dict(threshold=0.6), {}, "tasks.nuclei.threshold: 0.5 -> 0.6"),  # the watershed's markers
        ({}, dict(amp=True), "amp: False -> True"),  # bfloat16 autocast: slightly other probabilities
    ):
        options = dict(kind="instance", band=3, postprocess="watershed", min_size=10) | tasks
        runner = SlideRunner(
            GreyOracle(), build_tasks(dict(nuclei=options)), WSISettings(**defaults | settings), torch.device("cpu")
        )
        with runner:
            entry = runner.run(SlideInput(slide, slide.stem), out, resume=True)
        assert entry["status"] == "failed", entry
        assert (
            f"cannot resume {out / 'labels'}: it was made with other settings, another model or another slide"
            in (entry["error"])
        )
        assert f"({change}); remove it or drop --resume" in entry["error"]


def test_a_resume_refuses_another_slide_of_the_same_name_and_takes_the_same_slide_moved(tmp_path):
    """Outputs are per slide name: --resume over another slide of that name (another folder, a
    rescan) fails naming the slide, instead of skipping it with the first slide's objects or
    continuing its chunks; the same slide from another folder is still skipped."""
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    first = write_label_slide(tmp_path / "a" / "labels.tiff", ellipses(192, 288, 10, seed=6, borders=96))
    other = write_label_slide(tmp_path / "b" / "labels.tiff", ellipses(192, 288, 10, seed=7, borders=96))
    out = tmp_path / "out"
    assert oracle_run(first, out)["status"] == "done"
    made = (out / "labels" / "nuclei.geojson").read_text()
    entry = oracle_run(other, out, resume=True)
    assert entry["status"] == "failed", entry
    assert "another slide (slide: '" in entry["error"] and "; remove it or drop --resume" in entry["error"]
    assert (out / "labels" / "nuclei.geojson").read_text() == made  # nothing of the first slide's lost
    moved = tmp_path / "c" / "labels.tiff"
    shutil.copy(first, moved)
    assert oracle_run(moved, out, resume=True)["status"] == "skipped"
    run = out / "labels" / "run.json"  # outputs of a vismtl that did not identify slides: taken as this one's
    settings = run.read_text()
    run.write_text(json.dumps({k: v for k, v in json.loads(settings).items() if k != "slide"}))
    assert oracle_run(other, out, resume=True)["status"] == "skipped"
    run.write_text(settings[:-20])  # damaged: the slide fails naming the file, and what to do
    entry = oracle_run(first, out, resume=True)
    assert entry["status"] == "failed" and f"cannot read {run} (JSONDecodeError: " in entry["error"]
    assert entry["error"].endswith("rerun the slide without --resume")


def test_a_resume_remakes_an_array_cut_short_and_sweeps_unfinished_writes(tmp_path):
    """What a run killed inside a write leaves (an array folder without its metadata, temporary files
    of atomic writes) is remade or removed by the resumed run, which then equals a whole run."""
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(288, 384, 20, seed=3, borders=96))
    whole = oracle_outputs(slide, tmp_path / "whole")
    folder = tmp_path / "killed" / "labels"
    oracle_run(slide, tmp_path / "killed")
    for name in ("summary.json", "journal.jsonl", "nuclei.geojson"):  # as if killed before the first chunk
        (folder / name).unlink()
    shutil.rmtree(folder / "nuclei.zarr")
    (folder / "nuclei.zarr").mkdir()  # the array's folder, its metadata never written
    (folder / ".summary.json.k2j4.tmp").write_text("{")
    (folder / ".nuclei.zarr.0badc0de.tmp").mkdir()
    (folder / ".parts" / "nuclei").mkdir(parents=True)
    (folder / ".parts" / "nuclei" / ".0_0.features.x1y2.tmp").write_text("[")
    resumed = oracle_outputs(slide, tmp_path / "killed", resume=True)
    assert resumed[0] == whole[0] and np.array_equal(resumed[1], whole[1])
    assert not list(folder.rglob("*.tmp"))


def test_a_run_killed_before_its_summary_puts_the_objects_together_again(tmp_path, monkeypatch):
    """Killed after the GeoJSON but before the summary (which marks a slide complete): the resumed run
    finds every chunk done and the parts still there, and writes what a whole run writes, the objects
    put together from pieces included (a margin of 16 px: the objects are larger)."""
    from vismtl.wsi.outputs import SlideOutputs

    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=3, borders=96))
    whole = oracle_outputs(slide, tmp_path / "whole", margin=16)
    assert whole[2]["cut_objects"] > 0

    def killed(self, summary):
        raise RuntimeError("killed")

    real = SlideOutputs.write_summary
    monkeypatch.setattr(SlideOutputs, "write_summary", killed)
    assert oracle_run(slide, tmp_path / "killed", margin=16)["status"] == "failed"
    assert (tmp_path / "killed" / "labels" / "nuclei.geojson").is_file()
    monkeypatch.setattr(SlideOutputs, "write_summary", real)
    resumed = oracle_outputs(slide, tmp_path / "killed", resume=True, margin=16)
    assert resumed[0] == whole[0] and np.array_equal(resumed[1], whole[1])
    timings = ("timings", "chunks", "tiles_shared", "tile_cache_mb")  # this run computed no tile
    assert {k: v for k, v in resumed[2].items() if k not in timings} == {
        k: v for k, v in whole[2].items() if k not in timings
    }
    assert not (tmp_path / "killed" / "labels" / ".parts").exists()


def test_damaged_pieces_fail_the_slide_with_the_file_named(tmp_path, monkeypatch):
    """A pieces file that is not what vismtl wrote: the slide fails with one line naming the file."""
    from vismtl.wsi.outputs import SlideOutputs

    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=3, borders=96))
    real = SlideOutputs.write_instances

    def damaged(self, assembled):
        next((self.folder / ".parts" / "nuclei").glob("*.pieces")).write_text('{"top": 1}\n')
        return real(self, assembled)

    monkeypatch.setattr(SlideOutputs, "write_instances", damaged)
    entry = oracle_run(slide, tmp_path / "out", margin=16)
    assert entry["status"] == "failed"
    assert "cannot read the object pieces in" in entry["error"] and ".pieces (KeyError" in entry["error"]
    assert "rerun the slide without --resume" in entry["error"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_infer(checkpoint, slides, out, script=ROOT / "tools" / "infer_wsi.py", **env):
    """``torchrun --nproc_per_node=2 SCRIPT`` over ``slides`` with 2 gloo ranks: the finished process."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
        str(script), str(TINY), str(checkpoint), *map(str, slides),
        "--out-dir", str(out), "--launcher", "pytorch", "--tissue", "all",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        env={**subprocess_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        process.stdout_text, process.stderr_text = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process


def late_rank_script(folder: Path) -> Path:
    """tools/infer_wsi.py with rank LATE_RANK starting its slides LATE_S seconds late, under a process
    group whose timeout is PG_TIMEOUT_S seconds."""
    script = folder / "late_rank.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import datetime, os, runpy, sys, time
            import torch.distributed as dist
            from vismtl.wsi.engine import SlideRunner

            init, run_many = dist.init_process_group, SlideRunner.run_many
            timeout = datetime.timedelta(seconds=float(os.environ["PG_TIMEOUT_S"]))
            dist.init_process_group = lambda *a, **k: init(*a, **k, timeout=timeout)

            def late(self, *args, **kwargs):
                if os.environ["RANK"] == os.environ["LATE_RANK"]:
                    time.sleep(float(os.environ["LATE_S"]))
                yield from run_many(self, *args, **kwargs)

            SlideRunner.run_many = late
            if __name__ == "__main__":  # not in a spawned process, which imports this file again
                sys.argv[0] = {str(ROOT / "tools" / "infer_wsi.py")!r}
                runpy.run_path(sys.argv[0], run_name="__main__")
            """
        )
    )
    return script


def test_two_ranks_take_disjoint_slides(tmp_path, tiny_checkpoint):
    """torchrun with 2 gloo ranks over 5 slides: each slide is done exactly once, also one whose claim
    a killed run left behind, and the manifest is merged in the inputs' order."""
    from wsi_helpers import write_label_slide as write

    slides = []
    for k in range(5):
        slides.append(write(tmp_path / f"slide{k}.tiff", ellipses(200, 260, 5, seed=k, borders=96)))
    out = tmp_path / "out"
    (out / ".claims").mkdir(parents=True)
    (out / ".claims" / "slide3").write_text("1\n")  # a killed run's claim
    process = torchrun_infer(tiny_checkpoint, slides, out)
    assert process.returncode == 0, process.stderr_text[-3000:]
    entries = json.loads((out / "manifest.json").read_text())["slides"]
    assert [e["name"] for e in entries] == [f"slide{k}" for k in range(5)]
    assert all(e["status"] == "done" and e["rank"] in (0, 1) for e in entries)
    for k in range(5):
        assert (out / f"slide{k}" / "summary.json").is_file()
    assert not list(out.glob(".manifest.rank*")) and not (out / ".claims").exists()
    assert (out / "slides.csv").read_text().splitlines()[1:] and len((out / "slides.csv").read_text().splitlines()) == 6


def test_a_rank_ending_long_after_the_others_outlasts_the_process_group_timeout(tmp_path, tiny_checkpoint):
    """Rank 1 starts 8 s late under a process group whose timeout is 3 s (10 minutes with NCCL; a
    rank may end a whole slide after the others): rank 0 waits for its part on files, not in a
    barrier that the timeout would abort, and merges the manifest."""
    from wsi_helpers import write_label_slide as write

    slides = [write(tmp_path / f"slide{k}.tiff", ellipses(200, 260, 5, seed=k, borders=96)) for k in range(3)]
    script, out = late_rank_script(tmp_path), tmp_path / "out"
    process = torchrun_infer(tiny_checkpoint, slides, out, script, LATE_RANK="1", LATE_S="8", PG_TIMEOUT_S="3")
    assert process.returncode == 0, process.stderr_text[-3000:]
    entries = json.loads((out / "manifest.json").read_text())["slides"]
    assert [(e["name"], e["status"]) for e in entries] == [(f"slide{k}", "done") for k in range(3)]


def test_a_slide_failed_on_another_rank_is_reported_by_rank_0(tmp_path, tiny_checkpoint):
    """Rank 0 starts late, so rank 1 takes every slide, a missing one among them: rank 1 still ends
    with status 0 (ending with 1 would have torchrun end rank 0 before it merges), and rank 0's
    merged manifest, listing and exit status 1 report the failure."""
    from wsi_helpers import write_label_slide as write

    slides = [write(tmp_path / f"slide{k}.tiff", ellipses(200, 260, 5, seed=k, borders=96)) for k in range(2)]
    slides.append(tmp_path / "missing.tiff")
    script, out = late_rank_script(tmp_path), tmp_path / "out"
    process = torchrun_infer(tiny_checkpoint, slides, out, script, LATE_RANK="0", LATE_S="6", PG_TIMEOUT_S="60")
    assert process.returncode == 1, process.stderr_text[-3000:]
    entries = json.loads((out / "manifest.json").read_text())["slides"]
    assert [(e["name"], e["status"], e["rank"]) for e in entries] == [
        ("slide0", "done", 1),
        ("slide1", "done", 1),
        ("missing", "failed", 1),
    ]
    assert "3 slides: 2 done, 1 failed" in process.stdout_text


def test_prefetched_keeps_order_reraises_and_stops_its_thread():
    assert list(Prefetched(iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise OSError("tile 2 does not decode")

    got = []
    with pytest.raises(OSError, match="tile 2 does not decode"):
        for item in Prefetched(failing()):
            got.append(item)
    assert got == [1]
    early = Prefetched(iter(range(1000)), depth=2)  # a consumer that stops (an error in the model)
    assert next(early) == 0
    early.close()
    assert not any(t.name == "vismtl-reader" for t in threading.enumerate())
    produced = []  # reading starts at once, before the first item is asked for (the next slide's
    ahead = Prefetched(produced.append(k) or k for k in range(1000))  # first chunks, read meanwhile)
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert produced == [0, 1, 2]  # two queued, the third waiting for room: no further
    ahead.close()  # never iterated: its thread stops all the same
    assert not any(t.name == "vismtl-reader" for t in threading.enumerate())


@pytest.mark.parametrize(
    "option, message",
    [
        (["--writers", "0"], "wsi.writers must be at least 1, not 0"),
        (["--finish-workers", "-1"], "wsi.finish_workers must be 0 or more, not -1"),
        (["--workers", "-2"], "wsi.workers must be 0 (a reading thread) or more processes, not -2"),
        (["--threads", "0"], "wsi.threads must be at least 1 (or None for PyTorch's default), not 0"),
        (["--tile-cache-mb", "-1"], "wsi.tile_cache_mb must be 0 (no tiles kept) or more, not -1.0"),
        (["--mask-dir", "/no/such/masks"], "wsi.mask_dir (--mask-dir) /no/such/masks: no such folder"),
        (["--batch-size", "0"], "wsi.batch_size must be at least 1, not 0"),  # it ran for ever
        (
            ["--chunk", "100"],
            "wsi.chunk must be a positive multiple of the step (128 px: wsi.stride, else wsi.tile), not 100; "
            "without it, the multiple nearest 1024 px",
        ),
        (["--tile", "0"], "wsi.tile must be a positive number of pixels, not 0"),
        (["--context", "-1"], "wsi.context must be 0 or more pixels, not -1"),
        (["--target-mpp", "0"], "wsi.mpp must be a positive number of microns per pixel, not 0.0"),
        (["--stride", "300"], "wsi.stride must lie in [1, wsi.tile = 128], not 300"),
        (["--mpp", "-1"], "--mpp must be a positive number of microns per pixel, not -1.0"),
        (["--dry-run", "--mpp", "0"], "--mpp must be a positive number of microns per pixel, not 0.0"),
    ],
)
def test_bad_wsi_options_are_one_line_errors(tmp_path, capsys, monkeypatch, option, message):
    """Checked before the checkpoint is read: exit status 2 and one "error:" line, no traceback."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import infer_wsi

    status = infer_wsi.main([str(TINY), str(tmp_path / "none.pth"), str(tmp_path), "--out-dir", str(tmp_path), *option])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]


def test_an_output_folder_that_cannot_be_made_is_said_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import infer_wsi

    slide = tmp_path / "slide.png"
    cv2.imwrite(str(slide), np.full((64, 64, 3), 200, np.uint8))
    (tmp_path / "taken").write_text("a file where the folder would go")
    out_dir = tmp_path / "taken" / "out"
    status = infer_wsi.main([str(TINY), str(tmp_path / "none.pth"), str(slide), "--out-dir", str(out_dir)])
    assert status == 2
    message = f"error: cannot make the --out-dir folder {out_dir} (Not a directory): choose another --out-dir"
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_the_pytorch_launcher_outside_torchrun_says_how_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import infer_wsi

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["tools/infer_wsi.py"])
    slide = tmp_path / "slide.png"
    cv2.imwrite(str(slide), np.full((64, 64, 3), 200, np.uint8))
    out = tmp_path / "out"
    assert infer_wsi.main([str(TINY), "none.pth", str(slide), "--out-dir", str(out), "--launcher", "pytorch"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --launcher pytorch needs the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR "
        "missing); start with: torchrun --nproc_per_node=N tools/infer_wsi.py ... --launcher pytorch"
    ]


def test_a_bad_wsi_setting_in_the_config_names_the_config(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import infer_wsi

    config = tmp_path / "typo.py"
    config.write_text(f'_base_ = ["{TINY}"]\nwsi = dict(cuda_graph="yes")\n')
    status = infer_wsi.main([str(config), str(tmp_path / "none.pth"), str(tmp_path), "--out-dir", str(tmp_path)])
    assert status == 2
    expected = f"error: {config}: wsi.cuda_graph must be True or False, not 'yes'"
    assert capsys.readouterr().err.strip().splitlines() == [expected]


class PatchOracle(GreyOracle):
    """GreyOracle's nuclei and a tile class: the brightness of the tile's kept pixels, in 4 bands of 12 from 200."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = super().forward(image)
        brightness = image[:, :, 16:-16, 16:-16].float().mean(dim=(1, 2, 3))  # 16: the context
        outputs["tissue"] = torch.nn.functional.one_hot(((brightness - 200) // 12).long().clamp(0, 3), 4).float() * 10
        return outputs


def test_each_tile_s_class_is_mapped_in_a_zarr_grid_and_a_picture(tmp_path, monkeypatch):
    """A patch-class task (tissue types) gets <task>.zarr, a cell per tile holding its class + 1, and
    <task>_map.png; the cells are the classes of the tiles' own pixels, also after a resume."""
    from vismtl.wsi import Slide

    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=8, borders=96))
    tasks = dict(nuclei=dict(kind="instance", band=3, postprocess="watershed", min_size=10))
    tasks["tissue"] = dict(kind="patch_class", num_classes=4, class_names=["dark", "dim", "light", "bright"])
    settings = WSISettings(tile=96, context=16, chunk=192, margin=48, batch_size=8, workers=0, tissue="all")
    with SlideRunner(PatchOracle(), build_tasks(tasks), settings, torch.device("cpu")) as runner:
        assert runner.run(SlideInput(slide, "labels"), tmp_path / "out", resume=False)["status"] == "done"
    folder = tmp_path / "out" / "labels"
    grid = zarr.open_array(str(folder / "tissue.zarr"), mode="r")
    assert grid.shape == (5, 7) and grid.attrs["cell_px"] == 96
    assert grid.attrs["classes"] == ["dark", "dim", "light", "bright"]
    expected = np.zeros((5, 7), np.uint8)
    with Slide.open(slide) as opened:
        for row in range(5):
            for col in range(7):
                kept = opened.read(col * 96, row * 96, 96, 96, 1.0)
                expected[row, col] = min(max(int((kept.astype(np.float32).mean() - 200) // 12), 0), 3) + 1
    np.testing.assert_array_equal(grid[:], expected)
    assert len(np.unique(expected)) > 1  # the slide has tiles of several classes
    picture = cv2.imread(str(folder / "tissue_map.png"))
    thumbnail = cv2.imread(str(folder / "thumbnail.png"))
    # the legends below: 4 classes in the map's, 1 instance task in the picture's
    assert picture.shape[1] == thumbnail.shape[1] and picture.shape[0] > thumbnail.shape[0]
    summary = json.loads((folder / "summary.json").read_text())
    votes = summary["patch_votes"]["tissue"]
    assert votes == [int((expected == c + 1).sum()) for c in range(4)]
    # killed before its summary, then resumed: no chunk runs again, the map comes from the journal
    from vismtl.wsi.outputs import SlideOutputs

    def killed(self, summary):
        raise RuntimeError("killed")

    real = SlideOutputs.write_summary
    monkeypatch.setattr(SlideOutputs, "write_summary", killed)
    with SlideRunner(PatchOracle(), build_tasks(tasks), settings, torch.device("cpu")) as runner:
        assert runner.run(SlideInput(slide, "labels"), tmp_path / "killed", resume=False)["status"] == "failed"
        monkeypatch.setattr(SlideOutputs, "write_summary", real)
        shutil.rmtree(tmp_path / "killed" / "labels" / "tissue.zarr")
        assert runner.run(SlideInput(slide, "labels"), tmp_path / "killed", resume=True)["tiles"] == 35
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "killed" / "labels" / "tissue.zarr"))[:], expected)


def test_patch_votes_count_each_tile_of_the_core_once():
    from vismtl.wsi.stitch import patch_classes

    tasks = build_tasks(dict(tissue=dict(kind="patch_class", num_classes=4)))
    canvas = type("Canvas", (), {"patch_tiles": {}})()
    core = (0, 0, 512, 512)
    positions = np.array([[0, 0], [0, 256], [256, 512], [512, 0], [256, 256]])  # 3rd and 4th outside
    logits = torch.full((5, 4), -5.0)
    logits[torch.arange(5), torch.tensor([2, 2, 1, 3, 0])] = 5.0
    vote_patches(canvas, tasks, {"tissue": logits}, positions, core)
    vote_patches(canvas, tasks, {"tissue": logits[:2]}, positions[:2], core)
    votes, tiles = patch_classes(canvas, tasks)
    assert votes["tissue"] == [1, 0, 4, 0]
    assert tiles["tissue"] == [[0, 0, 2], [0, 256, 2], [256, 256, 0], [0, 0, 2], [0, 256, 2]]


class SleepingOracle(PatchOracle):
    """PatchOracle behind a GPU kernel that spins ``cycles`` clock cycles: each batch then stays
    on the GPU for a known time after its call returns."""

    def __init__(self, cycles: int) -> None:
        super().__init__()
        self.cycles = cycles

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        torch.cuda._sleep(self.cycles)
        return super().forward(image)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_model_s_thread_stitches_a_batch_without_waiting_for_the_gpu(tmp_path, monkeypatch):
    """While the GPU still computes a batch (0.3 s of spinning queued before the model's kernels),
    starting its chunks (kept tiles and their votes) and adding its tiles (blending, votes, tiles
    kept for later chunks) return at once and leave the batch queued: nothing there waits for
    the stream, so the model's thread queues the next batch and the GPU does not idle between
    batches. (A copy from pageable host memory may wait for the stream: the small arrays go
    through pinned memory.)"""
    from vismtl.wsi.stitcher import ChunkStitcher

    cycles = gpu_cycles(0.3)
    calls: list[tuple[str, float, bool]] = []

    def timed(name, method):
        def call(self, *args):
            started = time.perf_counter()
            result = method(self, *args)
            calls.append((name, time.perf_counter() - started, not torch.cuda.current_stream().query()))
            return result

        return call

    for name in ("begin", "add"):
        monkeypatch.setattr(ChunkStitcher, name, timed(name, getattr(ChunkStitcher, name)))
    slide = write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 60, seed=12, borders=96))
    tasks = dict(nuclei=dict(kind="instance", band=3, postprocess="watershed", min_size=10))
    tasks["tissue"] = dict(kind="patch_class", num_classes=4)
    settings = WSISettings(tile=96, context=16, chunk=192, margin=48, batch_size=8, workers=0, tissue="all")
    with SlideRunner(SleepingOracle(cycles).cuda(), build_tasks(tasks), settings, torch.device("cuda")) as runner:
        assert runner.run(SlideInput(slide, "labels"), tmp_path / "out", resume=False)["status"] == "done"
    assert {name for name, _, _ in calls} == {"begin", "add"}
    slow = [(name, round(seconds, 3)) for name, seconds, _ in calls if seconds > 0.1]
    assert not slow, f"stitching waited for the GPU: {slow}"
    assert all(busy for name, _, busy in calls if name == "add")  # the batch still on the GPU after it


def test_chunks_with_tissue_only_in_their_margin_are_skipped():
    from vismtl.wsi.plan import plan_slide
    from vismtl.wsi.tiling import TileLayout, TissueIndex

    layout = TileLayout(height=2048, width=2048, tile=256, stride=256, context=0, chunk=1024, margin=64)
    mask = np.zeros((256, 256), bool)  # 1 mask pixel = 8 output pixels
    mask[12:25, 129:137] = True  # output rows 96-200, columns 1032-1096: chunk (0, 1), by its left edge
    plan = plan_slide(layout, TissueIndex(mask, 1 / 8), {}, 0.5)
    # chunk (0, 0) sees that tissue in its right margin only: it is skipped, not computed for nothing
    assert plan.chunks == [(0, 1)] and plan.skipped == 3
    assert plan.positions.tolist() == [[0, 1024]]  # the one tile with tissue, in its core


def test_objects_never_grow_into_pixels_no_tile_ran_on():
    from vismtl.wsi.stitch import ChunkJob, chunk_maps, decide_instances

    tasks = build_tasks(load_config(ROOT / "configs/_base_/datasets/histology_tasks.py").tasks)
    probabilities = torch.zeros((1, 3, 40, 60))
    probabilities[0, 0, :, :30] = 1.0  # tiles ran on the left half only: background there...
    probabilities[0, :, 10:30, 18:30] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # ...and a gland seed at its edge
    grown = tasks["gland"].decide(probabilities)[0]
    assert grown[:, 30:].any()  # the band's growth alone would reach into the uncomputed half
    job = ChunkJob((0, 0, 40, 60), (0, 0, 40, 60), 1.0, None)
    cut = decide_instances(chunk_maps({"gland": probabilities}, tasks, job), tasks, (40, 60))["gland"][0]
    assert not cut[:, 30:].any() and torch.equal(cut[:, :30], grown[:, :30])


def test_a_stitch_thread_setting_that_is_not_a_boolean_is_a_config_error():
    from vismtl.config import ConfigError

    with pytest.raises(ConfigError, match=r"^wsi.stitch_thread must be True or False, not 'yes'$"):
        WSISettings(stitch_thread="yes")


@pytest.mark.parametrize(
    "given, side",
    [
        ({}, 1024),
        ({"tile": 164}, 984),  # HoVer-Net's output tile: 6 steps
        ({"tile": 448}, 896),
        ({"tile": 256, "stride": 200}, 1000),
        ({"tile": 2000}, 2000),  # at least one step
        ({"tile": 164, "chunk": 328}, 328),
    ],
)
def test_the_chunk_is_a_multiple_of_the_step_near_1024_unless_given(given, side):
    """--tile 164 alone used to fail (1024 is no multiple of 164); a resume compares the side used."""
    settings = WSISettings(**given)
    assert settings.chunk_side == side and settings.fingerprint()["chunk"] == side
    if "chunk" not in given:  # still the default after another tile is set (the tool's options)
        assert dataclasses.replace(settings, tile=250, stride=None).chunk_side == 1000
