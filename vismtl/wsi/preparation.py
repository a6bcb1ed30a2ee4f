"""A slide made ready for its tiles: opened, its tissue mask and plan made, its outputs created.

:func:`prepare_slide` runs in a helper thread of the engine's process for a batch's first slide;
each later one is prepared beside the slide before it, whose model's thread launches kernels
meanwhile, and so, where there are finishing processes (a GPU's default), in one of them: its
Python (the tissue mask, the plan, zarr's array creation) then does not take turns at the GIL
with those launches (``benchmarks/wsi_prepare_conclude.py``). It takes and returns plain data, which a
process gets pickled. :func:`survey_slide` and :func:`plan_tiles` also serve ``--dry-run``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vismtl.io import file_digest
from vismtl.tasks import Task
from vismtl.wsi.inputs import SlideInput
from vismtl.wsi.outputs import SlideOutputs
from vismtl.wsi.plan import SlidePlan, plan_slide
from vismtl.wsi.reader import Slide, SlideError
from vismtl.wsi.settings import WSISettings
from vismtl.wsi.stitch import raster_spec
from vismtl.wsi.tiling import TileLayout, TissueIndex
from vismtl.wsi.tissue import load_geojson_mask, load_mask, tissue_mask

log = logging.getLogger("vismtl")

# Pixels whose sides differ by more than this fraction are said to be not square: scanners'
# calibrations differ in the third or fourth digit (0.2527 against 0.2528 um), which is no harm.
NON_SQUARE = 0.01


class NoTissueError(RuntimeError):
    """The tissue mask of a slide is empty: nothing to run."""


@dataclass(frozen=True)
class SlideSetup:
    """What preparing a slide needs of the run."""

    settings: WSISettings
    margin: int  # pixels around a chunk (0 without instance tasks)
    model_id: str  # identifies the weights (a resume must use the same)


@dataclass
class Surveyed:
    """A slide opened and looked at by :func:`survey_slide`."""

    mpp: float  # level-0 microns per pixel
    scale: float  # output pixels per level-0 pixel
    size: tuple[int, int]  # level-0 (width, height)
    layout: TileLayout
    thumb_scale: float  # mask pixels per level-0 pixel
    picture: np.ndarray  # what the predictions are drawn over
    mask: np.ndarray  # tissue, at the thumbnail's scale
    tissue_um2: float


@dataclass
class Prepared:
    """A slide made ready for its tiles by :func:`prepare_slide`."""

    scale: float  # output pixels per level-0 pixel
    mpp: float  # level-0 microns per pixel
    layout: TileLayout
    mask: np.ndarray  # tissue, at the thumbnail's scale
    picture: np.ndarray  # what the predictions are drawn over
    outputs: SlideOutputs
    plan: SlidePlan
    resumed: int  # chunks an earlier run finished


def prepare_slide(
    tasks: Mapping[str, Task], setup: SlideSetup, slide_input: SlideInput, folder: Path, resume: bool, mpp: float | None
) -> Prepared | None:
    """Open the slide, make its tissue mask and plan, and create its outputs in ``folder``; None
    for a slide that ``resume`` finds done. Raises :class:`NoTissueError` for a blank slide (its
    pictures written), or the slide's error."""
    settings = setup.settings
    seen = survey_slide(setup, slide_input, mpp)
    fingerprint: dict[str, Any] = {
        **settings.fingerprint(),
        "model": setup.model_id,
        "tasks": {name: task.settings() for name, task in tasks.items()},
        "mpp": seen.mpp,
        # which slide: another one of the same name (another folder, a rescan) is not continued or skipped
        "slide": file_digest(slide_input.path, limit=1 << 20),
    }
    outputs = SlideOutputs(folder, seen.layout, fingerprint)
    if resume and outputs.is_complete():
        return None
    finished = outputs.prepare(resume)
    if seen.tissue_um2 < settings.min_tissue_um2:
        outputs.write_pictures(seen.picture, seen.mask)
        raise NoTissueError(
            f"no tissue found in {slide_input.path} ({seen.tissue_um2:.0f} um^2 of tissue-like pixels, less than "
            f"wsi.min_tissue_um2 = {settings.min_tissue_um2:.0f}; blank slide or too faint)"
        )
    plan = plan_tiles(tasks, settings, seen, finished)
    outputs.create_arrays({name: raster_spec(task) for name, task in tasks.items() if task.dense})
    return Prepared(seen.scale, seen.mpp, seen.layout, seen.mask, seen.picture, outputs, plan, len(finished))


def survey_slide(setup: SlideSetup, slide_input: SlideInput, mpp: float | None, picture: bool = True) -> Surveyed:
    """Open the slide: its resolution, output grid, thumbnail and tissue mask (and, with
    ``picture``, what its predictions are drawn over)."""
    settings = setup.settings
    with Slide.open(slide_input.path) as slide:
        # --mpp only fills in for slides whose metadata has none
        slide_mpp = slide.mpp if slide.mpp is not None else mpp
        if slide_mpp is None:
            slide.require_mpp()  # raises, naming the slide and suggesting --mpp
        stretch = slide.stretch()
        if abs(stretch) > NON_SQUARE:
            log.warning(
                "%s: its pixels are not square (%.4g um wide, %.4g um high); it is run at %.4g um/px, their mean, "
                "so its outputs are %.1f %% too long along one axis and as much too short along the other",
                slide_input.path,
                *slide.mpp_xy,
                slide.mpp,
                50 * abs(stretch),
            )
        scale = slide_mpp / settings.mpp  # output pixels per level-0 pixel
        if scale > settings.max_upsampling:
            said = "--mpp says" if slide.mpp is None else "its metadata says"
            raise SlideError(
                f"slide {slide_input.path} is {slide_mpp:.4g} um/px ({said}), {scale:.3g}x coarser than the "
                f"{settings.mpp:.4g} um/px the model runs at: the model would see it upsampled {scale:.3g}x, blurred, "
                f"in {scale**2:,.0f} times the tiles (a low-resolution export? --mpp 25 meant as 0.25?); "
                f"--max-upsampling {math.ceil(scale)} runs it all the same"
            )
        layout = TileLayout(
            height=max(1, round(slide.height * scale)),
            width=max(1, round(slide.width * scale)),
            tile=settings.tile,
            stride=settings.step,
            context=settings.context,
            chunk=settings.chunk_side,
            margin=setup.margin,
        )
        # The tissue mask needs ~mask_mpp microns per pixel (about 1.25x), not a fixed size.
        side = max(slide.width, slide.height) * slide_mpp / settings.mask_mpp
        thumbnail, thumb_scale = slide.thumbnail(int(min(settings.thumbnail_size, max(side, 64))))
        drawn_over = thumbnail
        if picture:  # the picture of the predictions: finer than the mask (nuclei are a pixel at 8 um/px)
            picture_side = slide.stored_side(min(settings.thumbnail_size, max(layout.height, layout.width)))
            if picture_side > max(thumbnail.shape[:2]):
                drawn_over = slide.thumbnail(picture_side)[0]
        size = (slide.width, slide.height)
    mask = _tissue_of(settings, slide_input, thumbnail, thumb_scale)
    tissue_um2 = float(mask.sum()) * (slide_mpp / thumb_scale) ** 2
    return Surveyed(slide_mpp, scale, size, layout, thumb_scale, drawn_over, mask, tissue_um2)


def plan_tiles(tasks: Mapping[str, Task], settings: WSISettings, seen: Surveyed, finished: Mapping) -> SlidePlan:
    """The surveyed slide's plan: the tiles of its unfinished chunks with tissue, with the tile cache."""
    tissue = TissueIndex(seen.mask, seen.thumb_scale / seen.scale)
    return plan_slide(seen.layout, tissue, finished, seen.mpp, *_tile_cache_budget(tasks, settings))


def _tile_cache_budget(tasks: Mapping[str, Task], settings: WSISettings) -> tuple[int, int]:
    """(bytes for tiles kept between chunks, bytes per output pixel of a tile); (0, 0): none
    (overlapping or weighted tiles, where a pixel is a blend of several; vismtl.wsi.plan)."""
    if settings.step != settings.tile or settings.blend != "ones":
        return 0, 0
    pixel_bytes = 4 * sum(t.num_outputs for t in tasks.values() if t.dense)  # float32 canvases
    return int(settings.tile_cache_mb * 2**20), pixel_bytes


def _tissue_of(settings: WSISettings, slide_input: SlideInput, thumbnail: np.ndarray, scale: float) -> np.ndarray:
    """The tissue mask on ``thumbnail`` (``scale`` of its pixels per level-0 pixel): every pixel,
    the user's mask (an image, or regions drawn in QuPath) or the automatic one."""
    if settings.tissue == "all":
        return np.ones(thumbnail.shape[:2], bool)
    folder = Path(settings.mask_dir) if settings.mask_dir else None
    # a folder of masks may be the folder of the slides: never a slide as its own mask (A.png)
    for suffix in (".png", ".geojson") if folder else ():
        user = folder / f"{slide_input.name}{suffix}"
        if user.is_file() and user.resolve() == slide_input.path.resolve():
            continue
        if user.is_file() and suffix == ".geojson":
            return load_geojson_mask(user, thumbnail.shape[:2], scale)
        if user.is_file():
            return load_mask(user, thumbnail.shape[:2])
    return tissue_mask(thumbnail)
