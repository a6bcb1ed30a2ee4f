"""Whole-slide image reading: OpenSlide for the formats it knows, a plain-image fallback otherwise.

`Slide.read(x, y, w, h, scale)` returns RGB uint8 for a region given in OUTPUT pixels at `scale`
output pixels per level-0 pixel. It reads from the pyramid level with the largest downsample that is
still <= 1/scale, resizes to the exact output size, composites transparency onto white and pads
everything outside the slide with white, so tiles at the slide border need no special case.

Backends:
- "openslide": Aperio .svs, generic tiled TIFF, DICOM WSI, ... (anything `OpenSlide` opens). A DICOM
  slide is several .dcm files in one folder; opening any one of them opens the whole slide
  (OpenSlide >= 4.0 finds the other instances of the series itself).
- "openslide+tifffile": Aperio and generic-TIFF slides, opened and described by OpenSlide, their
  pixels decoded tile by tile by tifffile + imagecodecs (5-6x faster), after checking at open
  that both decode a patch alike (see `_tiff_pixels`).
- "image": plain PNG/JPEG (decoded once at open by cv2: such files are small by nature) and TIFFs
  OpenSlide refuses (e.g. stripped, non-tiled ones), read through tifffile's zarr store so that a
  region decodes only the strips/tiles it touches (a single-strip uncompressed TIFF is one chunk).

Thread safety: one Slide must be used by one thread at a time. Reading processes each open their own
Slide (opening is cheap: only headers are read). After OpenSlide reports a read error, its handle
stays in the error state and every later read on that Slide fails too.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import openslide

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
# Level-0 µm/px outside this range is not a microscope scan but a writer's default resolution tag
# (boxes.tiff says 352.8 = 72 dpi): such metadata is treated as unknown.
PLAUSIBLE_MPP = (0.01, 50.0)
# OpenSlide vendors whose slides are plain TIFF pyramids (see _tiff_pixels).
_TIFF_VENDORS = ("aperio", "generic-tiff")
# Thumbnails are assembled from reads of at most this many source pixels per side, so a slide
# without a pyramid is never read whole.
_THUMBNAIL_SOURCE_TILE = 4096
RESAMPLE_BLOCK = 128  # output pixels: the grid on which reads that resample do so

log = logging.getLogger("vismtl")


class SlideError(RuntimeError):
    """A slide (or its side files) could not be opened or read; the message names the file and the cause."""


def _iround(value: float) -> int:
    # Round half up (not to even), so that shared tile edges map to the same source pixel.
    return math.floor(value + 0.5)


def _plausible_mpp(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or not PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1]:
        return None
    return value


def _mean_mpp(mpp_x: float | None, mpp_y: float | None) -> float | None:
    values = [v for v in (mpp_x, mpp_y) if v is not None]
    return _plausible_mpp(sum(values) / len(values)) if values else None


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB from gray / gray+alpha / RGB / RGBA (uint8 or uint16); alpha is composited onto white."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1]
    if channels == 4 and pixels[..., 3].min() == 255:  # opaque: skip the compositing
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGBA2RGB)  # ~50x faster than numpy slicing
    if channels == 2 and pixels[..., 1].min() == 255:
        pixels = pixels[..., :1]
    elif channels in (2, 4):
        color, alpha = pixels[..., :-1].astype(np.float32), pixels[..., -1:].astype(np.float32)
        pixels = np.rint(color * alpha / 255.0 + 255.0 * (1.0 - alpha / 255.0)).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels)


class _OpenSlideSource:
    """Level reads through an OpenSlide handle (RGBA, not premultiplied)."""

    backend = "openslide"

    def __init__(self, path: Path) -> None:
        self.handle = openslide.OpenSlide(str(path))
        self.vendor = self.handle.properties.get("openslide.vendor")
        self.level_dimensions = [(int(w), int(h)) for w, h in self.handle.level_dimensions]
        self.level_downsamples = [float(d) for d in self.handle.level_downsamples]
        props = self.handle.properties
        self.mpp_xy = tuple(_parse_float(props.get(k)) for k in ("openslide.mpp-x", "openslide.mpp-y"))

    @property
    def mpp(self) -> float | None:
        return _mean_mpp(*self.mpp_xy)

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        # OpenSlide wants the top-left corner in level-0 coordinates.
        ds = self.level_downsamples[level]
        region = self.handle.read_region((_iround(x * ds), _iround(y * ds)), level, (width, height))
        return np.asarray(region)

    def close(self) -> None:
        self.handle.close()


class _ArraySource:
    """Level reads by slicing array-likes [H, W(, C)] or [C, H, W] (numpy, or zarr over a TIFF)."""

    backend = "image"

    def __init__(self, levels: list, channel_first: bool, mpp_xy: tuple = (None, None), closers: tuple = ()) -> None:
        self.levels, self.channel_first, self.mpp_xy, self.closers = levels, channel_first, mpp_xy, closers
        axes = (1, 2) if channel_first else (0, 1)
        self.level_dimensions = [(int(a.shape[axes[1]]), int(a.shape[axes[0]])) for a in levels]
        w0, h0 = self.level_dimensions[0]
        # Same definition as OpenSlide: the mean of the two axis ratios.
        self.level_downsamples = [(w0 / w + h0 / h) / 2.0 for w, h in self.level_dimensions]

    @property
    def mpp(self) -> float | None:
        return _mean_mpp(*self.mpp_xy)

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        array = self.levels[level]
        if self.channel_first:
            return np.moveaxis(np.asarray(array[:, y : y + height, x : x + width]), 0, -1)
        return np.asarray(array[y : y + height, x : x + width])

    def close(self) -> None:
        for close in self.closers:
            close()


def _parse_float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _check_layout(shape: tuple, dtype: np.dtype) -> bool:
    """Whether a level array is [H, W], [H, W, 1-4] or [3-4, H, W] (the latter returned as True)."""
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported pixel type {dtype} (need uint8 or uint16)")
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 2, 3, 4)):
        return False
    if len(shape) == 3 and shape[0] in (3, 4):
        return True
    raise ValueError(f"unsupported image layout {tuple(shape)} (need a single 2-D gray/RGB/RGBA plane)")


def _tiff_mpp(page) -> tuple[float | None, float | None]:
    """µm/px along x and y from a TIFF page's resolution tags (inch or centimetre units only)."""
    unit, xres, yres = (page.tags.get(name) for name in ("ResolutionUnit", "XResolution", "YResolution"))
    microns = {2: 25400.0, 3: 10000.0}.get(int(unit.value) if unit is not None else 2)
    if microns is None or xres is None or yres is None:
        return None, None
    per_unit = [num / den if den else 0.0 for num, den in (xres.value, yres.value)]
    return tuple(microns / v if v > 0 else None for v in per_unit)


def _open_tiff(path: Path) -> _ArraySource:
    # Imported here: only the fallback needs them, and zarr is slow to import.
    import tifffile
    import zarr

    tif = tifffile.TiffFile(path)
    try:
        series = tif.series[0]
        store = series.aszarr()
        node = zarr.open(store, mode="r")
        if hasattr(node, "shape"):
            levels = [node]
        else:  # a multiscale group: arrays "0", "1", ... from the largest down
            levels = [node[key] for key in sorted(node.array_keys(), key=int)]
        channel_first = _check_layout(levels[0].shape, np.dtype(levels[0].dtype))
        return _ArraySource(levels, channel_first, _tiff_mpp(series.pages[0]), (store.close, tif.close))
    except BaseException:
        tif.close()
        raise


class _TiledLevel:
    """One tiled, chunky TIFF level, sliced like an array ``[y0:y1, x0:x1]`` by reading and decoding
    only the tiles the region touches (no zarr store in between: its per-chunk bookkeeping cost
    a third as much again as the JPEG decoding)."""

    def __init__(self, page, filehandle) -> None:
        self.page, self.filehandle = page, filehandle
        self.shape, self.dtype, self.ndim = tuple(page.shape), np.dtype(page.dtype), len(page.shape)
        self.tile = (int(page.tilelength), int(page.tilewidth))
        self.across = -(-int(page.imagewidth) // self.tile[1])  # tiles per row

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        (y0, y1, _), (x0, x1, _) = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        (th, tw), page = self.tile, self.page
        # a missing (sparse) tile is white: OpenSlide reads it as transparent, i.e. glass
        out = np.full((y1 - y0, x1 - x0, *self.shape[2:]), np.iinfo(self.dtype).max, self.dtype)
        indices = [
            row * self.across + col
            for row in range(y0 // th, (y1 - 1) // th + 1)
            for col in range(x0 // tw, (x1 - 1) // tw + 1)
        ]
        offsets = [page.dataoffsets[i] for i in indices]
        counts = [page.databytecounts[i] for i in indices]
        for data, index in self.filehandle.read_segments(offsets, counts, indices):
            if not data:
                continue
            tile = page.decode(data, index, jpegtables=page.jpegtables)[0][0]  # [th, tw, samples]
            ty, tx = index // self.across * th, index % self.across * tw
            ys, ye, xs, xe = max(ty, y0), min(ty + th, y1), max(tx, x0), min(tx + tw, x1)
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = tile[ys - ty : ye - ty, xs - tx : xe - tx]
        return out


def _open_tiled_tiff(path: Path) -> _ArraySource | None:
    """The pyramid as :class:`_TiledLevel` s when every level is one tiled, chunky page, else None."""
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        pages = [level.keyframe for level in tif.series[0].levels]
        if all(len(level.pages) == 1 for level in tif.series[0].levels) and all(
            page.is_tiled and page.planarconfig == 1 and len(page.shape) == 3 for page in pages
        ):
            return _ArraySource([_TiledLevel(page, tif.filehandle) for page in pages], False, closers=(tif.close,))
    except Exception:
        pass
    tif.close()
    return None


def _open_plain_image(path: Path) -> _ArraySource:
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError("cv2 cannot decode it")
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # cv2 gives BGR(A)
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB if pixels.shape[-1] == 3 else cv2.COLOR_BGRA2RGBA)
    _check_layout(pixels.shape, pixels.dtype)
    return _ArraySource([pixels], channel_first=False)


def _open_fallback(path: Path) -> _ArraySource:
    source = _open_tiff(path) if path.suffix.lower() in TIFF_SUFFIXES else _open_plain_image(path)
    try:
        source.read_level(0, 0, 0, 1, 1)  # fail at open, not mid-run, when the codec is missing
    except BaseException:
        source.close()
        raise
    return source


def _tiff_pixels(path: Path, slide: _OpenSlideSource) -> _ArraySource | None:
    """The same pixels as ``slide``'s through tifffile + imagecodecs, if they are the same.

    Aperio and generic-TIFF slides are plain TIFF pyramids; tifffile decodes their JPEG
    tiles 5-6x faster than OpenSlide, which converts every tile to ARGB on one thread
    (``benchmarks/wsi_throughput.py``). Used only when tifffile sees the same levels as RGB
    uint8 and decodes a patch of the first and last level to OpenSlide's values; otherwise
    (other vendors, alpha, a tile that does not decode, ...) None: OpenSlide reads.
    """
    if slide.vendor not in _TIFF_VENDORS:
        return None
    try:
        pixels = _open_tiled_tiff(path) or _open_tiff(path)
    except Exception:
        return None
    try:
        level0 = pixels.levels[0]
        if pixels.level_dimensions != slide.level_dimensions or level0.ndim != 3 or level0.shape[-1] != 3:
            raise ValueError("another layout")
        if level0.dtype != np.uint8:
            raise ValueError("not uint8")
        for level in {0, len(pixels.levels) - 1}:
            width, height = slide.level_dimensions[level]
            w, h = min(width, 64), min(height, 64)
            x, y = (width - w) // 2, (height - h) // 2
            expected = to_rgb(slide.read_level(level, x, y, w, h))
            if np.abs(pixels.read_level(level, x, y, w, h).astype(np.int16) - expected).max() > 2:
                raise ValueError("other pixels")  # e.g. a colour space tifffile reads otherwise
    except Exception:
        pixels.close()
        return None
    pixels.mpp_xy, pixels.backend = slide.mpp_xy, "openslide+tifffile"  # OpenSlide's metadata, faster pixels
    slide.close()
    return pixels


def _open_source(path: Path, fast_tiff: bool = True) -> _OpenSlideSource | _ArraySource:
    try:
        slide = _OpenSlideSource(path)
        return (_tiff_pixels(path, slide) if fast_tiff else None) or slide
    except openslide.OpenSlideUnsupportedFormatError as exc:
        if path.suffix.lower() not in IMAGE_SUFFIXES + TIFF_SUFFIXES:  # else: try the plain-image reader
            raise SlideError(f"cannot open slide {path}: {exc} (no reader knows this format)") from exc
    except Exception as exc:
        raise SlideError(f"cannot open slide {path}: {exc}") from exc
    try:
        return _open_fallback(path)
    except Exception as exc:
        raise SlideError(f"cannot open slide {path}: {exc}") from exc


class Slide:
    """A whole-slide image opened for reading: OpenSlide for every format it knows (Aperio .svs,
    generic tiled TIFF, DICOM, ...), and a fallback for plain PNG/JPEG/TIFF images (read with cv2 or
    tifffile). Never loads a whole large slide into memory. Use from one thread only."""

    def __init__(
        self, path: Path, source: _OpenSlideSource | _ArraySource, mpp: float | None, fast_tiff: bool = True
    ) -> None:
        self.path, self.fast_tiff = path, fast_tiff
        self._source: _OpenSlideSource | _ArraySource | None = source
        self.backend: str = source.backend
        self.level_dimensions: list[tuple[int, int]] = list(source.level_dimensions)
        self.level_downsamples: list[float] = list(source.level_downsamples)
        self.width, self.height = self.level_dimensions[0]
        self.mpp = mpp
        self.mpp_xy: tuple[float | None, float | None] = source.mpp_xy  # as the metadata says

    def stretch(self) -> float:
        """By how much the metadata's pixel height differs from its width, as a fraction of their
        mean (0 where they are equal or not both known): vismtl runs a slide at the mean, so its
        outputs are too long by half this along one axis and too short by as much along the other."""
        mpp_x, mpp_y = (_plausible_mpp(v) for v in self.mpp_xy)
        return 0.0 if mpp_x is None or mpp_y is None else 2 * (mpp_y - mpp_x) / (mpp_x + mpp_y)

    @classmethod
    def open(cls, path: str | Path, mpp: float | None = None, fast_tiff: bool = True) -> Slide:
        """Open `path`; `mpp` (µm per level-0 pixel) overrides or supplies the slide's metadata;
        `fast_tiff=False` decodes TIFF pyramids through OpenSlide too (see `_tiff_pixels`)."""
        path = Path(path)
        if not path.is_file():
            raise SlideError(f"slide not found: {path}")
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise SlideError(f"invalid mpp {mpp} given for slide {path}: need a positive number")
        source = _open_source(path, fast_tiff)
        return cls(path, source, float(mpp) if mpp is not None else source.mpp, fast_tiff)

    def require_mpp(self) -> float:
        if self.mpp is None:
            lowest, highest = PLAUSIBLE_MPP
            raise SlideError(
                f"slide {self.path} has no microns-per-pixel metadata (none, or outside {lowest}-{highest} um/px: "
                "a writer's default, not a scanner's); pass --mpp"
            )
        return self.mpp

    def stored_side(self, wanted: int) -> int:
        """The longest side, at most ``wanted``, of a :meth:`thumbnail` read from a pyramid level
        as it is stored: the finest level within ``wanted``, or ``wanted`` where none is that small
        (on ``benchmarks/wsi_throughput.py``'s slide a 2,048 px thumbnail resampled from the 5,000 px
        level added 0.35 s to a 0.6 s slide call; its 1,250 px level reads in 0.01 s)."""
        # from the downsamples, rounded down, so that best_level picks that very level
        sides = [int(max(self.width, self.height) / downsample) for downsample in self.level_downsamples]
        return max((side for side in sides if side <= wanted), default=wanted)

    def best_level(self, scale: float) -> int:
        """The level with the largest downsample <= 1/scale (level 0 when enlarging)."""
        limit = (1.0 / scale) * (1.0 + 1e-6)  # tolerate float noise in stored downsamples
        fitting = [i for i, ds in enumerate(self.level_downsamples) if ds <= limit]
        return max(fitting, key=lambda i: self.level_downsamples[i]) if fitting else 0

    def read(self, x: int, y: int, width: int, height: int, scale: float) -> np.ndarray:
        """RGB uint8 [height, width, 3] of the region whose top-left is (x, y) in OUTPUT pixels at
        `scale` = output pixels per level-0 pixel. Regions partly or wholly outside the slide are
        valid: outside is white. Resampled on a fixed grid of ``RESAMPLE_BLOCK`` output pixels, whose
        block bounds are rounded to the level's pixels: any two reads agree where they overlap."""
        if width <= 0 or height <= 0 or not scale > 0:
            raise ValueError(f"bad region {width}x{height} at scale {scale} for slide {self.path}")
        level = self.best_level(scale)
        try:
            return self._read_resampled(level, scale * self.level_downsamples[level], x, y, width, height)
        except SlideError:
            raise
        except Exception as exc:
            raise SlideError(
                f"cannot read region x={x} y={y} {width}x{height} at scale {scale} (level {level}) "
                f"of slide {self.path}: {exc}"
            ) from exc

    def _read_resampled(self, level: int, factor: float, x: int, y: int, width: int, height: int) -> np.ndarray:
        """:meth:`read` from ``level``, ``factor`` output pixels per level pixel."""
        if factor == 1.0:  # output pixels are the level's pixels: no resampling
            return self._read_level_padded(level, x, y, width, height)
        if factor > RESAMPLE_BLOCK:
            raise ValueError(f"cannot enlarge {factor:.0f}x")
        # Resampled block by block on a fixed grid of the output, each block from the level
        # pixels its bounds round to: a pixel's value depends on where it lies on the slide, not
        # on the region asked for, so overlapping reads (neighbouring chunks, tiles kept between
        # chunks, a resumed run) agree exactly.
        block = RESAMPLE_BLOCK
        bx0, by0 = x // block * block, y // block * block
        bx1, by1 = -(-(x + width) // block) * block, -(-(y + height) // block) * block
        edges_x = [_iround(v / factor) for v in range(bx0, bx1 + 1, block)]
        edges_y = [_iround(v / factor) for v in range(by0, by1 + 1, block)]
        patch = self._read_level_padded(
            level, edges_x[0], edges_y[0], edges_x[-1] - edges_x[0], edges_y[-1] - edges_y[0]
        )
        out = np.empty((by1 - by0, bx1 - bx0, 3), np.uint8)
        for i, (top, bottom) in enumerate(zip(edges_y[:-1], edges_y[1:])):
            for j, (left, right) in enumerate(zip(edges_x[:-1], edges_x[1:])):
                source = patch[top - edges_y[0] : bottom - edges_y[0], left - edges_x[0] : right - edges_x[0]]
                out[i * block : (i + 1) * block, j * block : (j + 1) * block] = _resize(source, block, block)
        return out[y - by0 : y - by0 + height, x - bx0 : x - bx0 + width]

    def _read_level_padded(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB of a level-pixel rectangle; the part outside the level is white and never read."""
        if self._source is None:
            raise SlideError(f"slide {self.path} is closed")
        level_w, level_h = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, level_w), min(y + height, level_h)
        if (x0, y0, x1, y1) == (x, y, x + width, y + height):  # inside: no padding, no extra copy
            return to_rgb(self._source.read_level(level, x, y, width, height))
        out = np.full((height, width, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            pixels = self._source.read_level(level, x0, y0, x1 - x0, y1 - y0)
            out[y0 - y : y1 - y, x0 - x : x1 - x] = to_rgb(pixels)
        return out

    def thumbnail(self, max_size: int = 2048) -> tuple[np.ndarray, float]:
        """A low-resolution RGB image of the whole slide and its scale (thumbnail px per level-0 px),
        from the smallest adequate pyramid level, assembled tile by tile (bounded memory)."""
        scale = min(1.0, max_size / max(self.width, self.height))
        out_w, out_h = max(1, _iround(self.width * scale)), max(1, _iround(self.height * scale))
        factor = scale * self.level_downsamples[self.best_level(scale)]
        step = max(1, int(_THUMBNAIL_SOURCE_TILE * factor))
        image = np.empty((out_h, out_w, 3), np.uint8)
        damaged, read = [], False
        for ty in range(0, out_h, step):
            for tx in range(0, out_w, step):
                th, tw = min(step, out_h - ty), min(step, out_w - tx)
                pixels, errors, any_read = self.read_or_glass(tx, ty, tw, th, scale, part=64)
                image[ty : ty + th, tx : tx + tw] = pixels
                damaged, read = damaged + errors, read or any_read
        if not read:  # nothing read: a broken file, not a damaged tile
            raise damaged[0]
        if damaged:
            log.warning("%s: %d parts of its thumbnail could not be read and were left white", self.path, len(damaged))
        return image, scale

    def read_or_glass(
        self, x: int, y: int, width: int, height: int, scale: float, part: int
    ) -> tuple[np.ndarray, list[SlideError], bool]:
        """:meth:`read`, where a damaged tile of the file (one that does not decode) spoils the region:
        it is read again in parts of ``part`` pixels, on a new handle after each failure (OpenSlide
        leaves one in its error state), and the parts that still fail are white (glass). Returns the
        pixels, the failed parts' errors and whether any part was read. A closed slide and a
        file-system error (``OSError``: a share gone away) are raised, as by :meth:`read`."""
        try:
            return self.read(x, y, width, height, scale), [], True
        except SlideError as err:
            self.reopen_after(err)
            if part >= max(width, height):  # one part: the region itself
                return np.full((height, width, 3), 255, np.uint8), [err], False
        out = np.full((height, width, 3), 255, np.uint8)
        errors = []
        for top in range(0, height, part):
            for left in range(0, width, part):
                h, w = min(part, height - top), min(part, width - left)
                try:
                    out[top : top + h, left : left + w] = self.read(x + left, y + top, w, h, scale)
                except SlideError as err:
                    self.reopen_after(err)
                    errors.append(err)
        parts = -(-height // part) * -(-width // part)
        return out, errors, len(errors) < parts

    def reopen_after(self, error: SlideError) -> None:
        """After a failed :meth:`read`: a new handle if ``error`` was a damaged tile; else ``error``
        raised again (a closed slide, a file-system error)."""
        if self._source is None or isinstance(error.__cause__, OSError):
            raise error
        self._source.close()
        self._source = _open_source(self.path, self.fast_tiff)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        levels = len(self.level_dimensions)
        return f"Slide({str(self.path)!r}, {self.width}x{self.height}, levels={levels}, mpp={self.mpp})"


def _resize(patch: np.ndarray, width: int, height: int) -> np.ndarray:
    if patch.shape[:2] == (height, width):
        return patch
    shrinking = patch.shape[0] >= height and patch.shape[1] >= width
    return cv2.resize(patch, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
