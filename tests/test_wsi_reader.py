"""Slide reading (OpenSlide and the plain-image fallback) and tissue masks, on real and generated slides."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from vismtl.wsi.reader import Slide, SlideError, to_rgb
from vismtl.wsi.tissue import load_mask, optical_density, tissue_mask

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "slides"


@pytest.fixture
def slides() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared sample slides not found at {SHARED}")
    return SHARED


def composited(region) -> np.ndarray:
    """OpenSlide's RGBA (not premultiplied) on white, written out independently of the reader."""
    rgba = np.asarray(region).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


# --- opening and metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, levels",
    [
        ("cmu-1-small-region.svs", (2220, 2967), 1),
        ("boxes.tiff", (300, 250), 4),
        ("small_HE_levels.tiff", (300, 250), 4),
        ("small.svs", (16, 16), 1),
        ("boxes_0.dcm", (16, 16), 1),
        ("boxes_1.dcm", (16, 16), 1),
    ],
)
def test_openslide_formats_open_and_read(slides, name, size, levels):
    with Slide.open(slides / name) as slide:
        # TIFF pyramids: OpenSlide's metadata, tifffile's (checked equal, faster) pixels
        assert slide.backend == ("openslide" if name.endswith(".dcm") else "openslide+tifffile")
        assert (slide.width, slide.height) == size
        assert len(slide.level_dimensions) == len(slide.level_downsamples) == levels
        region = slide.read(size[0] // 2 - 6, size[1] // 2 - 5, 12, 10, 1.0)
    assert region.shape == (10, 12, 3) and region.dtype == np.uint8
    assert region.std() > 0  # real pixels, not the white padding


def test_dicom_pair_is_one_slide(slides):
    # OpenSlide finds the other instance of the series in the folder: either file opens the slide.
    with Slide.open(slides / "boxes_0.dcm") as first, Slide.open(slides / "boxes_1.dcm") as second:
        np.testing.assert_array_equal(first.read(0, 0, 16, 16, 1.0), second.read(0, 0, 16, 16, 1.0))
        assert first.mpp == pytest.approx(0.499)


def test_mpp_from_metadata_and_implausible_tags_ignored(slides):
    with Slide.open(slides / "cmu-1-small-region.svs") as slide:
        assert slide.mpp == pytest.approx(0.499, abs=1e-6)
        assert slide.require_mpp() == pytest.approx(0.499, abs=1e-6)
    # boxes.tiff carries the 72-dpi default (352.8 µm/px): not a scan resolution, so unknown.
    assert float(openslide.OpenSlide(str(slides / "boxes.tiff")).properties["openslide.mpp-x"]) > 300
    with Slide.open(slides / "boxes.tiff") as slide:
        assert slide.mpp is None
    with Slide.open(slides / "boxes.tiff", mpp=0.25) as slide:
        assert slide.mpp == 0.25


def test_png_fallback_and_missing_mpp(slides):
    path = slides / "no-tissue.png"
    with Slide.open(path) as slide:
        assert slide.backend == "image" and slide.mpp is None
        assert (slide.width, slide.height) == (512, 512)
        with pytest.raises(SlideError, match="no-tissue.png.*pass --mpp"):
            slide.require_mpp()
        expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)[100:130, 200:240]
        np.testing.assert_array_equal(slide.read(200, 100, 40, 30, 1.0), expected)
    with Slide.open(path, mpp=0.5) as slide:
        assert slide.mpp == 0.5


# --- bad slides -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["broken.svs", "unopenable.tiff"])
def test_bad_slides_fail_at_open_naming_the_file(slides, name):
    with pytest.raises(SlideError, match=f"cannot open slide .*{name}"):
        Slide.open(slides / name)


def test_unreadable_slide_fails_at_read_naming_file_and_region(slides):
    with Slide.open(slides / "unreadable.svs") as slide:
        assert slide.backend == "openslide"  # tifffile could not decode the check patch: OpenSlide reads
        with pytest.raises(SlideError, match=r"region x=0 y=0 8x8 .*unreadable\.svs"):
            slide.read(0, 0, 8, 8, 1.0)


def test_missing_slide(tmp_path):
    with pytest.raises(SlideError, match="slide not found: .*nothing.svs"):
        Slide.open(tmp_path / "nothing.svs")


def test_closed_slide_refuses_reads(slides):
    slide = Slide.open(slides / "small.svs")
    slide.close()
    with pytest.raises(SlideError, match="small.svs is closed"):
        slide.read(0, 0, 4, 4, 1.0)


# --- reading geometry -------------------------------------------------------------------------------


def test_read_at_full_resolution_equals_openslide(slides):
    path = slides / "cmu-1-small-region.svs"
    expected = composited(openslide.OpenSlide(str(path)).read_region((700, 1200), 0, (96, 64)))
    for fast_tiff, backend in ((True, "openslide+tifffile"), (False, "openslide")):
        with Slide.open(path, fast_tiff=fast_tiff) as slide:
            assert slide.backend == backend
            np.testing.assert_array_equal(slide.read(700, 1200, 96, 64, 1.0), expected)


def test_half_scale_reads_level_one(slides):
    path = slides / "boxes.tiff"
    # Output (10, 20) at scale 0.5 is level-0 (20, 40), i.e. level-1 pixel (10, 20): no resampling.
    expected = composited(openslide.OpenSlide(str(path)).read_region((20, 40), 1, (50, 40)))
    with Slide.open(path) as slide:
        assert slide.best_level(0.5) == 1
        assert slide.best_level(1 / 4.0161290322580641) == 2  # a stored non-integer downsample
        assert slide.best_level(0.3) == 1 and slide.best_level(2.0) == 0
        levels_read = []
        read_level = slide._source.read_level
        slide._source.read_level = lambda level, *box: levels_read.append(level) or read_level(level, *box)
        np.testing.assert_array_equal(slide.read(10, 20, 50, 40, 0.5), expected)
    assert levels_read == [1]


def test_region_past_the_edge_is_white(slides):
    path = slides / "cmu-1-small-region.svs"  # 2220 x 2967; its glass is greyish, never pure white
    handle = openslide.OpenSlide(str(path))
    inside = composited(handle.read_region((2200, 2952), 0, (20, 15)))
    top_left = composited(handle.read_region((0, 0), 0, (5, 5)))
    assert (inside.max(-1) < 255).mean() > 0.5 and (top_left.max(-1) < 255).mean() > 0.5
    with Slide.open(path) as slide:
        region = slide.read(2200, 2952, 40, 30, 1.0)
        assert region.shape == (30, 40, 3)
        np.testing.assert_array_equal(region[:15, :20], inside)
        assert (region[15:] == 255).all() and (region[:, 20:] == 255).all()
        assert (slide.read(-50, -50, 50, 50, 1.0) == 255).all()  # wholly outside
        corner = slide.read(-5, -5, 10, 10, 1.0)
        assert (corner[:5] == 255).all() and (corner[:, :5] == 255).all()
        np.testing.assert_array_equal(corner[5:, 5:], top_left)


@pytest.mark.parametrize("scale, level", [(0.7, 0), (0.35, 1)])
def test_scale_between_levels_is_close_to_resized_full_resolution(slides, scale, level):
    with Slide.open(slides / "small_HE_levels.tiff") as slide:
        width, height = round(300 * scale), round(250 * scale)
        assert slide.best_level(scale) == level
        region = slide.read(0, 0, width, height, scale)
        reference = cv2.resize(slide.read(0, 0, 300, 250, 1.0), (width, height), interpolation=cv2.INTER_AREA)
    assert region.shape == (height, width, 3)
    assert np.abs(region.astype(int) - reference).mean() < 3.0


def test_thumbnail_uses_a_small_level(slides):
    with Slide.open(slides / "boxes.tiff") as slide:
        thumb, scale = slide.thumbnail(40)
        assert scale == pytest.approx(40 / 300) and thumb.shape == (33, 40, 3)
        assert slide.best_level(scale) == 2
    with Slide.open(slides / "cmu-1-small-region.svs") as slide:
        thumb, scale = slide.thumbnail(256)
        assert thumb.shape == (256, 192, 3) and scale == pytest.approx(256 / 2967)


# --- generated inputs (no shared data needed) -------------------------------------------------------


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = (10, 100, 200)
    rgba[:, :2, 3] = 0  # transparent
    rgba[:, 2:4, 3] = 128  # half
    rgba[:, 4:, 3] = 255  # opaque
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    with Slide.open(path) as slide:
        out = slide.read(0, 0, 6, 4, 1.0)
    assert (out[:, :2] == 255).all()
    half = np.rint(np.array([10, 100, 200]) * 128 / 255 + 255 * (1 - 128 / 255))
    np.testing.assert_array_equal(out[0, 2], half)
    np.testing.assert_array_equal(out[0, 4], [10, 100, 200])
    np.testing.assert_array_equal(to_rgb(rgba), out)


def test_tiled_rgba_tiff_stays_with_openslide(tmp_path):
    """tifffile would see 4 channels where OpenSlide composites: no fast path, OpenSlide's pixels."""
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (10, 100, 200)
    rgba[..., 3] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    path = tmp_path / "rgba_tiled.tiff"
    tifffile.imwrite(path, rgba, tile=(16, 16), photometric="rgb", extrasamples=["unassalpha"])
    with Slide.open(path) as slide:
        assert slide.backend == "openslide"
        out = slide.read(0, 0, 64, 64, 1.0)
    np.testing.assert_array_equal(out, composited(openslide.OpenSlide(str(path)).read_region((0, 0), 0, (64, 64))))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, -1].tolist() == [10, 100, 200]


def test_tiled_tiff_tiles_decode_like_the_zarr_store_and_openslide(tmp_path):
    """The fast path's own tile reader: any region (edge tiles, several tiles, one pixel) equals
    tifffile's zarr store, and level 0 equals OpenSlide within JPEG decoder rounding."""
    from vismtl.wsi.reader import _open_tiff, _open_tiled_tiff
    from vismtl.wsi.synthetic import tissue_boxes_content, write_slide

    path = write_slide(tmp_path / "s.tiff", 700, 1000, tissue_boxes_content([(0, 0, 700, 1000)]), tile=256)
    tiles, store = _open_tiled_tiff(path), _open_tiff(path)
    rng = np.random.default_rng(0)
    for level, array in enumerate(store.levels):
        height, width = array.shape[:2]
        for _ in range(30):
            y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
            h, w = int(rng.integers(1, height - y0 + 1)), int(rng.integers(1, width - x0 + 1))
            np.testing.assert_array_equal(tiles.read_level(level, x0, y0, w, h), store.read_level(level, x0, y0, w, h))
    with Slide.open(path) as slide:
        assert slide.backend == "openslide+tifffile"
        ours = slide.read(200, 100, 600, 500, 1.0).astype(int)
    theirs = composited(openslide.OpenSlide(str(path)).read_region((200, 100), 0, (600, 500))).astype(int)
    assert np.abs(ours - theirs).max() <= 2
    tiles.close(), store.close()


def test_missing_tile_reads_as_glass_like_openslide(tmp_path):
    """A sparse tile (byte count 0) is white through the fast path, as OpenSlide composites it."""
    import struct

    from vismtl.wsi.synthetic import tissue_boxes_content, write_slide

    path = write_slide(
        tmp_path / "s.tiff", 300, 300, tissue_boxes_content([(0, 0, 300, 300)]), tile=128, downsamples=(1,)
    )
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        offset, size = tag.valueoffset, 8 if tag.dtype_name == "LONG8" else 4
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q" if size == 8 else "<I", data, offset, 0)  # tile 0 (top left) is now missing
    path.write_bytes(bytes(data))
    with Slide.open(path) as slide:
        assert slide.backend == "openslide+tifffile"
        region = slide.read(100, 100, 56, 56, 1.0)  # tiles 0, 1, 3 and 4
    theirs = composited(openslide.OpenSlide(str(path)).read_region((100, 100), 0, (56, 56))).astype(int)
    assert (region[:28, :28] == 255).all() and not (region[40:, 40:] == 255).all()
    assert np.abs(region.astype(int) - theirs).max() <= 2


def test_stripped_tiff_fallback_reads_regions(tmp_path):
    # OpenSlide only takes tiled TIFFs; a stripped one goes through tifffile's zarr store.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(
        path, image, rowsperstrip=8, compression="zlib", resolution=(40000, 40000), resolutionunit="CENTIMETER"
    )
    with Slide.open(path) as slide:
        assert slide.backend == "image" and (slide.width, slide.height) == (160, 120)
        assert slide.mpp == pytest.approx(0.25)  # 40000 px/cm
        np.testing.assert_array_equal(slide.read(30, 20, 50, 40, 1.0), image[20:60, 30:80])
        assert slide.read(0, 0, 80, 60, 0.5).shape == (60, 80, 3)


@pytest.mark.parametrize("tiled", [False, True])
def test_pixels_that_are_not_square_are_said_to_be_with_the_error_they_cause(tmp_path, caplog, tiled):
    """A slide whose pixels' sides differ (its TIFF's X and Y resolutions: OpenSlide's mpp-x and mpp-y
    for a tiled one) runs at their mean, with a warning naming the slide and the stretch; a
    calibration's last digits (0.1 %) are no harm and say nothing."""
    from vismtl.wsi import WSISettings
    from vismtl.wsi.inputs import SlideInput
    from vismtl.wsi.preparation import SlideSetup, survey_slide

    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    setup = SlideSetup(WSISettings(), margin=0, model_id="m")
    cases = (("square", 40000, False), ("calibrated", 39960, False), ("stretched", 38000, True))
    for name, y_resolution, warned in cases:
        path = tmp_path / f"{name}.tif"
        options = dict(tile=(64, 64)) if tiled else dict(rowsperstrip=8)
        tifffile.imwrite(path, image, resolution=(40000, y_resolution), resolutionunit="CENTIMETER", **options)
        caplog.clear()
        with caplog.at_level("WARNING", logger="vismtl"), Slide.open(path) as slide:
            assert slide.backend == ("openslide+tifffile" if tiled else "image")
            assert slide.mpp_xy == pytest.approx((0.25, 1e4 / y_resolution))
            assert slide.mpp == pytest.approx((0.25 + 1e4 / y_resolution) / 2)
            surveyed = survey_slide(setup, SlideInput(path, name), None)
        assert surveyed.mpp == slide.mpp
        messages = [r.getMessage() for r in caplog.records]
        assert bool(messages) == warned, messages
        if warned:  # 0.25 and 0.2632 um: 5.1 % apart, 2.6 % each way from their mean
            assert messages == [
                f"{path}: its pixels are not square (0.25 um wide, 0.2632 um high); it is run at 0.2566 um/px, "
                "their mean, so its outputs are 2.6 % too long along one axis and as much too short along the other"
            ]


def test_undecodable_plain_image_fails_at_open(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(SlideError, match="cannot open slide .*garbage.png"):
        Slide.open(path)


# --- tissue masks -----------------------------------------------------------------------------------


def test_blank_glass_has_no_tissue(slides):
    with Slide.open(slides / "no-tissue.png") as slide:
        thumb, _ = slide.thumbnail()
    assert tissue_mask(thumb).mean() < 0.01


def test_red_pen_is_not_tissue(slides):
    with Slide.open(slides / "tcga-red-pen.png") as slide:
        thumb, _ = slide.thumbnail()
    mask = tissue_mask(thumb)
    rgb = thumb.astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Independent rule, checked by eye on this image: the ink is red with little green AND blue;
    # eosin pink keeps its blue high.
    pen = (red - blue > 80) & (red - green > 80)
    assert 0.15 < pen.mean() < 0.3
    assert mask[pen].mean() < 0.05
    stained = (optical_density(thumb) > 0.2) & ~pen
    assert mask[stained].mean() > 0.7


def test_mostly_tissue_slide(slides):
    with Slide.open(slides / "cmu-1-small-region.svs") as slide:
        thumb, _ = slide.thumbnail(512)
    fraction = tissue_mask(thumb).mean()
    assert 0.25 < fraction < 0.55  # measured 0.36-0.38; the glass margins are clearly visible


def test_synthetic_blobs_kept_and_pen_strokes_removed():
    rng = np.random.default_rng(1)
    thumb = np.full((256, 256, 3), 242, np.uint8) + rng.integers(0, 6, (256, 256, 3), dtype=np.uint8)
    blobs = np.zeros((256, 256), np.uint8)
    cv2.ellipse(blobs, (80, 90), (50, 35), 20, 0, 360, 1, -1)
    cv2.circle(blobs, (180, 180), 40, 2, -1)
    thumb[blobs == 1] = (225, 140, 190)  # eosin pink
    thumb[blobs == 2] = (130, 80, 160)  # hematoxylin purple
    strokes = np.zeros((256, 256), np.uint8)
    cv2.line(strokes, (20, 230), (240, 140), 1, 6)  # blue, crossing the purple blob
    cv2.line(strokes, (150, 20), (240, 80), 2, 6)  # green, on glass
    thumb[strokes == 1] = (40, 70, 190)
    thumb[strokes == 2] = (40, 150, 70)
    mask = tissue_mask(thumb)
    truth = (blobs > 0) & (strokes == 0)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9
    assert mask[strokes > 0].mean() < 0.02


def test_load_mask(tmp_path):
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 20:] = 255
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), mask)
    loaded = load_mask(path, (10, 20))  # the slide's thumbnail, at another scale
    assert loaded.shape == (10, 20) and loaded.dtype == bool
    assert loaded[:, 10:].all() and not loaded[:, :10].any()
    with pytest.raises(SlideError, match="mask.png is 40 x 20 px, 2 times as wide as high, the slide 8 times"):
        load_mask(path, (10, 80))  # not stretched over a slide of other proportions
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    with pytest.raises(SlideError, match="tissue mask .*bad.png"):
        load_mask(bad, (10, 10))
    with pytest.raises(SlideError, match="tissue mask .*absent.png: file not found"):
        load_mask(tmp_path / "absent.png", (10, 10))


@pytest.mark.parametrize(
    "name, scale", [("small_HE_levels.tiff", 0.7), ("small_HE_levels.tiff", 0.35), ("cmu-1-small-region.svs", 0.998)]
)
def test_resampled_reads_agree_wherever_they_overlap(slides, name, scale):
    """A pixel's value depends on where it lies, not on the region read: neighbouring chunks, tiles
    kept between chunks and resumed runs see the same pixels. (Rounding each region's own bounds
    to the level's pixels, as before, shifted them by up to half a level pixel.)"""
    with Slide.open(slides / name) as slide:
        whole = slide.read(-40, -30, 300, 260, scale)
        for x, y, width, height in [(0, 0, 100, 90), (37, 11, 150, 171), (101, 64, 97, 33), (-40, -30, 41, 9)]:
            part = slide.read(x, y, width, height, scale)
            np.testing.assert_array_equal(part, whole[y + 30 : y + 30 + height, x + 40 : x + 40 + width])


def test_a_thumbnail_over_a_damaged_tile_is_white_there_and_the_rest_as_read(tmp_path, caplog):
    """The thumbnail of a slide whose stored tile does not decode: white over that tile (in parts of
    64 px), every other pixel as the undamaged slide's; a warning says so."""
    import logging

    from wsi_helpers import damage_tile, ellipses, write_label_slide

    truth = ellipses(480, 640, 30, seed=3, borders=96)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean = write_label_slide(tmp_path / "a" / "labels.tiff", truth)
    damaged = write_label_slide(tmp_path / "b" / "labels.tiff", truth)
    damage_tile(damaged, 3)  # stored 256 px tiles: rows 256-480, columns 0-256
    with Slide.open(clean) as slide:
        expected = slide.thumbnail(640)[0]
    with caplog.at_level(logging.WARNING, logger="vismtl"), Slide.open(damaged) as slide:
        image = slide.thumbnail(640)[0]
    white = np.zeros(image.shape[:2], bool)
    white[256:, :256] = True
    assert (image[white] == 255).all() and (expected[white] != 255).any()
    np.testing.assert_array_equal(image[~white], expected[~white])
    assert "16 parts of its thumbnail could not be read and were left white" in caplog.text
