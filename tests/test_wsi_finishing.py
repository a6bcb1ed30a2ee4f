"""Finishing chunks in worker processes: the maps cross intact, the results equal the inline ones."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import subprocess_env
from vismtl.config import load_config
from vismtl.tasks import build_tasks
from vismtl.wsi.finishing import ChunkFinisher, pack, packed_nbytes, unpack
from vismtl.wsi.pieces import read_pieces
from vismtl.wsi.stitch import ChunkJob, ChunkMaps, chunk_maps, decide_instances, finish_maps
from wsi_helpers import dying_conclusion, failing_conclusion, logging_conclusion, process_and_tasks

ROOT = Path(__file__).resolve().parents[1]
HISTOLOGY_TASKS = build_tasks(load_config(ROOT / "configs/_base_/datasets/histology_tasks.py").tasks)


def shared_blocks() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_pack_round_trip_narrows_integer_maps():
    rng = np.random.default_rng(0)
    maps = ChunkMaps(
        cues={
            "nuclei": {"mask": torch.from_numpy(rng.random((1, 30, 40)) > 0.5), "rise": torch.rand(1, 30, 40).double()}
        },
        rasters={"nuclei": torch.from_numpy(rng.integers(0, 256, (25, 35), dtype=np.uint8))},
        decided={
            "classes": torch.from_numpy(rng.integers(0, 7, (1, 37, 41))),  # int64, fits uint8
            "depth": torch.from_numpy(rng.random((1, 37, 41))),  # float64 kept
            "signed": torch.from_numpy(rng.integers(-5, 300, (1, 5, 3))),  # int64 -> int32
            "empty": torch.zeros((1, 0, 4), dtype=torch.int64),
            "autocast": torch.from_numpy(rng.random((1, 2, 3, 4), dtype=np.float32)).bfloat16(),  # -> float32
        },
        ran=torch.from_numpy(rng.random((1, 30, 40)) > 0.2),
        box=(3, 1, 33, 41),
    )
    block, spec = pack(maps)
    assert block.size >= packed_nbytes(maps)
    try:
        back = unpack(block, spec)  # views of the block
        assert back.box == (3, 1, 33, 41) and back.ran.dtype == torch.bool and torch.equal(back.ran, maps.ran)
        assert back.decided["classes"].dtype == torch.uint8 and back.decided["signed"].dtype == torch.int32
        assert back.decided["depth"].dtype == torch.float64 and back.decided["autocast"].dtype == torch.float32
        assert back.cues["nuclei"]["rise"].dtype == torch.float64 and back.rasters["nuclei"].dtype == torch.uint8
        flat, flat_back = maps.flat(), back.flat()
        assert flat.keys() == flat_back.keys()
        for key, value in flat.items():
            assert flat_back[key].shape == value.shape
            assert torch.equal(flat_back[key].to(value.dtype), value), key
    finally:
        back = flat_back = None  # the views go before the block closes
        block.close()
        block.unlink()


def histology_maps(seed: int, height: int = 160, width: int = 176) -> dict[str, torch.Tensor]:
    """Blobby probabilities of the histology tasks, as a chunk's canvas holds them."""
    rng = np.random.default_rng(seed)

    def smooth(sigma: float, channels: int) -> np.ndarray:
        noise = ndimage.gaussian_filter(rng.normal(size=(channels, height, width)), (0, sigma, sigma))
        return noise / noise.std()

    maps = {}
    for name, sigma in (("nuclei", 2.5), ("gland", 9.0), ("lumen", 5.0), ("gland_type", 4.0), ("nuclei_type", 4.0)):
        logits = torch.from_numpy(3.0 * smooth(sigma, HISTOLOGY_TASKS[name].num_outputs)).float()
        maps[name] = torch.softmax(logits, dim=0)[None]
    return maps


def test_processes_finish_chunks_like_the_writer_threads():
    job = ChunkJob(region=(64, 128, 224, 304), core=(80, 144, 208, 288), scale=2.0, mpp=0.25)
    before = shared_blocks()
    with ChunkFinisher(HISTOLOGY_TASKS, processes=2) as finisher:
        for seed in range(3):
            maps = chunk_maps(histology_maps(seed), HISTOLOGY_TASKS, job)
            rasters, parts, seconds = ChunkFinisher(HISTOLOGY_TASKS)(maps, job)  # inline
            rasters_p, parts_p, seconds_p = finisher(maps, job)
            assert seconds > 0 and seconds_p > 0
            assert rasters.keys() == rasters_p.keys() == {"nuclei", "gland", "lumen", "gland_type", "nuclei_type"}
            for name, value in rasters.items():
                assert value.shape == (128, 144) and np.array_equal(value, rasters_p[name]), name
            assert sum(parts["nuclei"].counts.values()) > 20
            assert sum(parts["gland"].counts.values()) + len(read_pieces(parts["gland"].pieces)) > 0
            assert parts == parts_p
    assert shared_blocks() <= before  # every block unlinked


def test_blocks_are_reused_across_chunks_of_any_size():
    """Chunks of changing sizes from two threads: the same results as inline, no more blocks than
    chunks in flight (a larger chunk replaces a spare that is too small), all unlinked at the end."""
    sizes = [(160, 176), (96, 120), (200, 240), (160, 176), (64, 64), (200, 240)] * 2
    jobs = [ChunkJob((0, 0, h, w), (0, 0, h, w), 1.0, None) for h, w in sizes]
    chunks = [
        (chunk_maps(histology_maps(seed, *size), HISTOLOGY_TASKS, job), job)
        for seed, (size, job) in enumerate(zip(sizes, jobs))
    ]
    expected = [ChunkFinisher(HISTOLOGY_TASKS)(maps, job)[:2] for maps, job in chunks]
    before = shared_blocks()
    with ChunkFinisher(HISTOLOGY_TASKS, processes=2) as finisher, ThreadPoolExecutor(2) as threads:
        used, block_of = set(), finisher.blocks.take

        def recorded(nbytes):
            block = block_of(nbytes)
            used.add(block.name)
            return block

        finisher.blocks.take = recorded
        results = list(threads.map(lambda chunk: finisher(*chunk)[:2], chunks))
        assert len(used) <= 4  # 12 chunks: 2 in flight, each block replaced at most once as sizes grow
        blocks = {name for name in shared_blocks() - before if name.startswith("psm_")}  # not the pool's semaphores
        assert finisher.blocks.spare() <= 2 and len(blocks) <= 2
    for (rasters, parts), (rasters_here, parts_here) in zip(results, expected):
        assert parts == parts_here and all(np.array_equal(rasters[n], rasters_here[n]) for n in rasters_here)
    assert shared_blocks() <= before  # every block unlinked


def test_a_call_runs_in_a_finishing_process_with_its_tasks_or_here_without_processes():
    """ChunkFinisher.call: how a slide is concluded off the model's process (and its GIL)."""
    with ChunkFinisher(HISTOLOGY_TASKS, processes=1) as finisher:
        pid, names = finisher.call("looking", process_and_tasks)
        # the slide fails with the process's error, or with what it was doing if the process dies
        with pytest.raises(ValueError, match=r"cannot read the object pieces in /out/a\.pieces"):
            finisher.call("concluding", failing_conclusion, "/out/a.pieces")
        with pytest.raises(BrokenProcessPool, match="died while putting a's GeoJSON .* --finish-workers"):
            finisher.call("putting a's GeoJSON together", dying_conclusion)
        assert finisher.call("looking", process_and_tasks)[0] not in (pid, os.getpid())  # a new process
    assert pid != os.getpid() and names == sorted(HISTOLOGY_TASKS)
    inline = ChunkFinisher(HISTOLOGY_TASKS).call("looking", process_and_tasks)
    assert inline == (os.getpid(), sorted(HISTOLOGY_TASKS))


def test_what_a_call_logs_in_a_finishing_process_is_logged_by_the_engine_at_its_levels(caplog):
    caplog.set_level(logging.INFO, logger="vismtl")
    with ChunkFinisher(HISTOLOGY_TASKS, processes=1) as finisher:
        pid = finisher.call("concluding", logging_conclusion)
    assert pid != os.getpid()
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "vismtl"] == [
        (logging.WARNING, "slide a: 3 tiles left white"),
        (logging.INFO, "slide a: 2 objects put together from pieces"),
    ]


def test_a_killed_worker_fails_its_chunk_and_the_next_chunk_gets_a_new_pool():
    job = ChunkJob(region=(0, 0, 160, 176), core=(0, 0, 160, 176), scale=1.0, mpp=None)
    maps = chunk_maps(histology_maps(5), HISTOLOGY_TASKS, job)
    with ChunkFinisher(HISTOLOGY_TASKS, processes=1) as finisher:
        expected = finisher(maps, job)
        (worker,) = finisher.start()._processes.values()
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(timeout=30)
        time.sleep(0.2)
        with pytest.raises(BrokenProcessPool, match="chunk-finishing process died .* --finish-workers"):
            finisher(maps, job)
        again = finisher(maps, job)
    assert again[1] == expected[1]
    assert all(np.array_equal(again[0][n], expected[0][n]) for n in expected[0])


def test_finishing_defaults_give_a_gpu_machine_cores_to_finish_and_the_cpu_none(monkeypatch):
    from vismtl.wsi import settings as wsi_settings

    monkeypatch.setattr(wsi_settings, "_cores", lambda: 16)
    default = wsi_settings.WSISettings()
    assert default.finishing_processes("cpu", instances=True) == 0
    assert default.finishing_processes("cuda", instances=False) == 0
    assert default.finishing_processes("cuda", instances=True) == 16 - 4 - 2  # minus readers, model, spare
    assert default.writer_threads(0) == 2 and default.writer_threads(10) == 11
    explicit = wsi_settings.WSISettings(finish_workers=3, writers=5, workers=8)
    assert explicit.finishing_processes("cpu", instances=True) == 3 and explicit.writer_threads(3) == 5
    assert wsi_settings.WSISettings(workers=14).finishing_processes("cuda", instances=True) == 1
    # the engine's own CPU threads: PyTorch's on the CPU (the model's), 4 around a GPU's model
    assert default.engine_threads("cpu") is None and default.engine_threads("cuda") == 4
    assert wsi_settings.WSISettings(threads=2).engine_threads("cuda") == 2
    monkeypatch.setattr(wsi_settings, "_cores", lambda: 2)
    assert default.engine_threads("cuda") == 2


def test_ranks_on_one_machine_share_its_cores(monkeypatch):
    from vismtl.wsi import settings as wsi_settings

    monkeypatch.setattr(wsi_settings.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert wsi_settings.WSISettings().finishing_processes("cuda", instances=True) == 64 // 4 - 4 - 2
    # engines sharing a GPU (torchrun, more processes than GPUs): one reader per 4 cores of a share
    monkeypatch.setattr(wsi_settings.os, "sched_getaffinity", lambda pid: set(range(16)))
    readers_and_finishers = {}
    for engines in (1, 2, 3, 4):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(engines))
        default = wsi_settings.WSISettings()
        readers_and_finishers[engines] = (
            default.reading_workers("cuda"),
            default.finishing_processes("cuda", instances=True),
        )
    assert readers_and_finishers == {1: (4, 10), 2: (2, 4), 3: (1, 2), 4: (1, 1)}
    assert wsi_settings.WSISettings().reading_workers("cpu") == 0
    # a CPU model under torchrun (which gives its processes one thread each): the share of the cores
    assert wsi_settings.WSISettings().engine_threads("cpu") == 16 // 4
    assert wsi_settings.WSISettings(threads=1).engine_threads("cpu") == 1
    # one process, torchrun's or not: PyTorch's threads, one per core
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert wsi_settings.WSISettings().engine_threads("cpu") is None
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert wsi_settings.WSISettings().engine_threads("cpu") is None


ORPHAN_SCRIPT = """
import sys, time
import torch
from vismtl.config import load_config
from vismtl.tasks import build_tasks
from vismtl.wsi.finishing import ChunkFinisher
from vismtl.wsi.stitch import ChunkJob, chunk_maps
if __name__ == "__main__":
    tasks = build_tasks(load_config(sys.argv[1]).tasks)
    finisher = ChunkFinisher(tasks, processes=2)
    pool = finisher.start()
    while len(pool._processes) < 2 or not all(p.pid for p in pool._processes.values()):
        time.sleep(0.1)
    time.sleep(3)  # let them import and start their watchdogs
    # one chunk, so that a shared-memory block is kept for the next one
    job = ChunkJob((0, 0, 32, 32), (0, 0, 32, 32), 1.0, None)
    activated = {n: torch.full((1, t.num_outputs, 32, 32), 0.3) for n, t in tasks.items() if t.kind == "instance"}
    finisher(chunk_maps(activated, tasks, job), job)
    print(*[p.pid for p in pool._processes.values()], flush=True)
    print(*[block.name for block in finisher.blocks._spare], flush=True)
    time.sleep(600)
"""


def test_finishing_workers_exit_when_the_engine_is_killed(tmp_path):
    script = tmp_path / "engine.py"
    script.write_text(ORPHAN_SCRIPT)
    config = ROOT / "configs/_base_/datasets/histology_tasks.py"
    engine = subprocess.Popen(
        [sys.executable, str(script), str(config)], stdout=subprocess.PIPE, text=True, env=subprocess_env()
    )
    try:
        workers = [int(pid) for pid in engine.stdout.readline().split()]
        blocks = engine.stdout.readline().split()
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        assert len(blocks) == 1 and (blocks[0] in shared_blocks() or not os.path.isdir("/dev/shm"))
    finally:
        engine.kill()  # SIGKILL: no cleanup runs in the engine
        engine.wait()
    deadline = time.monotonic() + 30
    while (any(alive(pid) for pid in workers) or blocks[0] in shared_blocks()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers), "finishing workers outlived the engine"
    # the block kept for the next chunk: multiprocessing's resource tracker unlinks it once they are gone
    assert blocks[0] not in shared_blocks(), "a shared-memory block outlived the engine"


def alive(pid: int) -> bool:
    """Running (a zombie is dead: its parent, the engine, is gone and init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_objects_get_the_majority_type_of_their_pixels():
    from collections import Counter

    from vismtl.tasks import instance_targets as it

    activated = histology_maps(7)
    job = ChunkJob(region=(0, 0, 160, 176), core=(0, 0, 160, 176), scale=1.0, mpp=None)  # every object owned
    _, parts, _ = ChunkFinisher(HISTOLOGY_TASKS)(chunk_maps(activated, HISTOLOGY_TASKS, job), job)
    labels = HISTOLOGY_TASKS["nuclei"].decide(activated["nuclei"])[0].numpy()
    types = HISTOLOGY_TASKS["nuclei_type"].decide(activated["nuclei_type"])[0].numpy()
    votes = it.majority_type(labels, types, 7)  # voted over the raw type decisions
    names = HISTOLOGY_TASKS["nuclei_type"].class_names
    expected = Counter(names[votes[k]] for k in np.unique(labels) if k)
    assert len(expected) >= 3 and parts["nuclei"].counts == dict(expected)


@pytest.mark.parametrize("seed", range(3))
def test_decisions_on_the_box_of_the_tiles_that_ran_equal_those_on_the_whole_region(seed):
    """A chunk at the edge of the tissue: its instance tasks are decided from cues made on the
    box of the pixels some tile ran on (grown by the tasks' reach), and give the labels of
    deciding the whole region."""
    ran = np.zeros((224, 240), bool)
    ran[40:120, 56:184] = ran[120:200, 56:120] = True  # an L of tiles, away from the region's border
    activated = {n: value * torch.from_numpy(ran) for n, value in histology_maps(seed, 224, 240).items()}
    job = ChunkJob((0, 0, 224, 240), (0, 0, 224, 240), 1.0, None)
    maps = chunk_maps(activated, HISTOLOGY_TASKS, job)
    assert maps.box == (40 - 6, 56 - 6, 200 + 6, 184 + 6)  # grown by the glands' reach, the largest
    decided = decide_instances(maps, HISTOLOGY_TASKS, (224, 240))
    for name in ("nuclei", "gland", "lumen"):
        whole = HISTOLOGY_TASKS[name].decide(activated[name])[0]
        expected = torch.where(torch.from_numpy(ran), whole, torch.zeros((), dtype=whole.dtype))
        assert torch.equal(decided[name][0], expected), name
        assert expected.max() > 0 and expected[~torch.from_numpy(ran)].eq(0).all()


def test_objects_at_the_edge_of_the_tiles_that_ran_keep_their_size_for_min_size():
    """The box is grown by the task's reach: a lumen seed in the corner of the tiles grows past
    them (3 x 4 = 12 px, kept: min_size 10) before the cut, as on the whole region; decided on
    the bare box it would only grow inwards (6 px) and be dropped."""
    probabilities = torch.zeros((1, 3, 80, 100))
    probabilities[0, 0, 20:60, 30:80] = 1.0  # tiles ran here: background...
    probabilities[0, :, 59, 78:80] = torch.tensor([0.0, 1.0, 0.0])[:, None]  # ...and a seed in their corner
    job = ChunkJob((0, 0, 80, 100), (0, 0, 80, 100), 1.0, None)
    decided = decide_instances(chunk_maps({"lumen": probabilities}, HISTOLOGY_TASKS, job), HISTOLOGY_TASKS, (80, 100))[
        "lumen"
    ][0]
    assert int(decided.max()) == 1 and int((decided > 0).sum()) == 6  # the object, cut to the tiles
    whole = HISTOLOGY_TASKS["lumen"].decide(probabilities)[0]
    assert int((whole > 0).sum()) == 12


def test_a_chunk_where_no_tile_ran_has_no_objects_and_empty_rasters():
    job = ChunkJob((0, 0, 48, 64), (8, 8, 40, 56), 1.0, 0.5)
    activated = {n: torch.zeros((1, t.num_outputs, 48, 64)) for n, t in HISTOLOGY_TASKS.items() if t.dense}
    maps = chunk_maps(activated, HISTOLOGY_TASKS, job)
    assert maps.box is None and maps.ran is None and not maps.cues
    rasters, parts, _ = ChunkFinisher(HISTOLOGY_TASKS)(maps, job)
    assert all(value.shape[:2] == (32, 48) for value in rasters.values())
    assert not any(value.any() for name, value in rasters.items() if HISTOLOGY_TASKS[name].kind == "instance")
    assert {name: part.counts for name, part in parts.items()} == {"nuclei": {}, "gland": {}, "lumen": {}}


@pytest.mark.parametrize("config", ["scenes.py", "nyud.py", "pascal_context.py", "histology_tasks.py"])
def test_raster_spec_is_the_dtype_and_shape_each_task_writes(config):
    """The zarr arrays are created from raster_spec before any chunk: it must say what the
    chunks will hold (a wider raster written into a narrower array would wrap silently)."""
    from vismtl.wsi.stitch import raster_spec

    tasks = build_tasks(load_config(ROOT / "configs" / "_base_" / "datasets" / config).tasks)
    dense = {name: task for name, task in tasks.items() if task.dense}
    rng = np.random.default_rng(0)
    logits = {
        n: torch.from_numpy(rng.normal(0, 3, (1, t.num_outputs, 12, 10)).astype(np.float32)) for n, t in dense.items()
    }
    job = ChunkJob((0, 0, 12, 10), (2, 1, 12, 10), 1.0, None)
    rasters, _ = finish_maps(chunk_maps({n: t.activate(logits[n]) for n, t in dense.items()}, dense, job), dense, job)
    for name, task in dense.items():
        written = rasters[name]
        assert written.shape[:2] == (10, 9) and raster_spec(task) == (written.dtype, written.shape[2:]), name


def test_nuclei_decided_where_the_maps_are_finish_as_those_decided_in_finishing():
    """chunk_maps(..., decide=True) (wsi.decide_on_gpu; here on the CPU, the same PyTorch code):
    the ids replace the nuclei's cues and the chunk finishes to the same rasters and objects."""
    ran = np.zeros((224, 240), bool)
    ran[40:200, 56:184] = True
    activated = {n: value * torch.from_numpy(ran) for n, value in histology_maps(1, 224, 240).items()}
    job = ChunkJob((0, 0, 224, 240), (16, 16, 208, 224), 1.0, 0.5)
    cued, decided = (chunk_maps(activated, HISTOLOGY_TASKS, job, decide) for decide in (False, True))
    assert set(cued.cues["nuclei"]) == {"mask", "marked", "rise"} and set(decided.cues["nuclei"]) == {"labels"}
    (rasters, parts), (rasters_decided, parts_decided) = (finish_maps(m, HISTOLOGY_TASKS, job) for m in (cued, decided))
    assert parts_decided == parts and parts["nuclei"].counts
    assert all(np.array_equal(rasters[n], rasters_decided[n]) for n in rasters)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the engine makes the maps there")
@pytest.mark.parametrize("seed", range(2))
def test_maps_made_on_the_gpu_equal_those_made_on_the_cpu(seed):
    """On a GPU the cues, the instance rasters and the other tasks' decisions are made beside the
    model: from the same probabilities they must be the CPU's, bit for bit (float64 cues)."""
    ran = np.zeros((224, 240), bool)
    ran[40:200, 56:184] = True
    activated = {n: value * torch.from_numpy(ran) for n, value in histology_maps(seed, 224, 240).items()}
    job = ChunkJob((0, 0, 224, 240), (16, 16, 208, 224), 1.0, 0.5)
    on_cpu = chunk_maps(activated, HISTOLOGY_TASKS, job).flat()
    on_gpu = chunk_maps({n: v.cuda() for n, v in activated.items()}, HISTOLOGY_TASKS, job).cpu().flat()
    assert on_cpu.keys() == on_gpu.keys() and ("cues", "nuclei", "rise") in on_cpu
    for key, value in on_cpu.items():
        assert value.dtype == on_gpu[key].dtype and torch.equal(value, on_gpu[key]), key
