"""Reading processes: the tiles they hand over through shared-memory blocks are those a reading
thread reads, the blocks are reused chunk after chunk, and none is left behind, whether a slide is
read to its end, stopped early or fails."""

import os

import numpy as np
import pytest

from vismtl.wsi.reader import SlideError
from vismtl.wsi.reading import ChunkReader, ReadingPool
from wsi_helpers import damage_tile, ellipses, write_label_slide


def shared_blocks() -> set[str]:
    """The shared-memory blocks now open on the machine (not the pools' semaphores)."""
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")} if os.path.isdir("/dev/shm") else set()


def read_here(slide, corners: np.ndarray, size: int) -> np.ndarray:
    """A reading thread's tiles (none for a chunk whose tiles all come from the tile cache)."""
    return ChunkReader(slide).read(corners, size, 1.0)[0] if len(corners) else np.zeros((0, size, size, 3), np.uint8)


def chunk_corners(rng: np.random.Generator, count: int, height: int, width: int, size: int) -> list[np.ndarray]:
    """Chunks of 0 to 12 tile corners (y, x), some reaching past the slide's edge."""
    return [
        np.stack([rng.integers(-size // 2, height, n), rng.integers(-size // 2, width, n)], axis=1)
        for n in rng.integers(0, 13, count)
    ]


@pytest.fixture
def slide(tmp_path):
    return write_label_slide(tmp_path / "labels.tiff", ellipses(480, 640, 30, seed=3, borders=96))


def test_reading_processes_give_the_tiles_a_reading_thread_reads_through_reused_blocks(slide):
    corners = chunk_corners(np.random.default_rng(0), 20, 480, 640, 96)
    expected = [read_here(slide, c, 96) for c in corners]
    before = shared_blocks()
    pool = ReadingPool(2)
    taken = pool.blocks.take
    used = set()

    def recorded(nbytes):
        block = taken(nbytes)
        used.add(block.name)
        return block

    pool.blocks.take = recorded
    try:
        chunks = list(pool.chunks(slide, 1.0, corners, 96, ahead=3))
        assert pool.blocks.spare() <= 3
    finally:
        pool.close()
    assert [len(tiles) for tiles, _ in chunks] == [len(c) for c in corners] and sum(map(len, corners)) > 100
    # every chunk compared only now: each was copied out of its block before the block was reused
    for (tiles, unreadable), want in zip(chunks, expected):
        assert unreadable == [] and tiles.dtype == np.uint8 and np.array_equal(tiles, want)
    # 3 chunks in flight: each block replaced at most a few times as the chunks grow, not one per chunk
    assert 3 <= len(used) <= 8
    assert shared_blocks() <= before


def test_a_damaged_tile_is_left_white_and_named_by_a_reading_process(slide):
    damage_tile(slide, 3)
    corners = [np.array([[0, 0], [0, 300], [300, 0]]), np.array([[300, 0]])]
    pool = ReadingPool(1)
    try:
        (first, bad_first), (second, bad_second) = pool.chunks(slide, 1.0, corners, 128, ahead=2)
    finally:
        pool.close()
    assert [index for index, _ in bad_first] == [2] and [index for index, _ in bad_second] == [0]
    assert (first[2] == 255).all() and (second[0] == 255).all() and not (first[0] == 255).all()


def test_a_slide_read_in_part_or_failing_leaves_no_block_behind(slide, tmp_path):
    corners = chunk_corners(np.random.default_rng(2), 12, 480, 640, 96)
    before = shared_blocks()
    pool = ReadingPool(2)
    try:
        chunks = pool.chunks(slide, 1.0, corners, 96, ahead=4)
        next(chunks)
        chunks.close()  # stopped with chunks in flight (a slide interrupted, a failed model)
        with pytest.raises(FileNotFoundError, match="gone.tiff"):  # a slide deleted while its batch runs
            list(pool.chunks(tmp_path / "gone.tiff", 1.0, corners, 96, ahead=4))
        (tmp_path / "broken.tiff").write_bytes(b"II*\0 not a slide")
        with pytest.raises(SlideError, match="broken.tiff"):
            list(pool.chunks(tmp_path / "broken.tiff", 1.0, corners, 96, ahead=4))
        assert len(list(pool.chunks(slide, 1.0, corners, 96, ahead=4))) == len(corners)  # the pool still reads
    finally:
        pool.close()
    assert shared_blocks() <= before
