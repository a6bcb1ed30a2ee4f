"""Tissue masks on low-resolution slide images: blank glass and pen ink are not tissue.

Method (`tissue_mask`), on an RGB thumbnail (about 1.25x, i.e. a few µm per pixel):
1. Ink: pixels that are strongly saturated (S >= 90 of 255) but outside the H&E hue range (H&E is
   purple to pink, taken as 245°..344°) are marker ink: red (344°..30°), orange/yellow/green/cyan
   (30°..200°) and blue (200°..245°). Near-black pixels (max channel < 50) are black marker. Only
   connected ink regions of at least 0.1 % of the image count (a stroke is large; an off-hue speck
   is a dark nucleus or a blood cell), and they are dilated by one pixel for the stroke's soft rim.
2. Stain: H&E tissue is saturated, glass is bright and grey. The saturation threshold is Otsu's on the
   non-ink pixels, clipped to [20, 45] of 255 so that blank glass (Otsu splits only noise) stays
   glass and an almost-all-tissue image (Otsu splits light from dark tissue) keeps its light tissue.
   Pixels must also absorb some light (mean optical density >= 0.05), which rejects tinted glass.
3. Morphology: close small gaps (disk of radius ~ image size / 512), fill holes smaller than 1 % of
   the image, drop objects smaller than `min_area_fraction` of the image, then remove the ink again
   (filling must not re-admit a stroke drawn across tissue).

Limits: haemorrhage (bright saturated red) looks like red ink and is dropped; a blue marker and a very
blue hematoxylin are separated only by hue (245°); ink marks smaller than 0.1 % of the image are kept
as tissue when they are saturated.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from vismtl.wsi.reader import SlideError

# Hues in degrees. H&E spans purple hematoxylin (~260°) to pink eosin (~330°); measured on
# tcga-red-pen.png, eosin reaches 340° and red ink 346°..2°.
HE_HUE_RANGE = (245.0, 344.0)
INK_MIN_SATURATION = 90  # of 255: ink is vivid; faint off-hue tints stay eligible as tissue
BLACK_INK_MAX_VALUE = 50  # max(R, G, B) below this is black marker, not stain
SATURATION_THRESHOLD_RANGE = (20, 45)  # clip of the Otsu threshold on saturation
MIN_OPTICAL_DENSITY = 0.05  # mean over channels of -log10(I / 255)
MAX_HOLE_FRACTION = 0.01
INK_MIN_AREA_FRACTION = 1e-3  # ink components smaller than this fraction of the image are not strokes


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Mean optical density over the three channels, float32 [h, w]."""
    return _OPTICAL_DENSITY[rgb].mean(axis=-1)  # a table of the 256 values: no log per pixel


_OPTICAL_DENSITY = -np.log10(np.maximum(np.arange(256, dtype=np.float32), 1.0) / 255.0)


def hue_saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in 0..255."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    return hsv[..., 0].astype(np.float32) * 2.0, hsv[..., 1], hsv[..., 2]


def ink_mask(rgb: np.ndarray) -> np.ndarray:
    """bool [h, w]: pen-marker pixels (vivid non-H&E hues, or near black)."""
    hue, saturation, value = hue_saturation_value(rgb)
    off_hue = (hue < HE_HUE_RANGE[0]) | (hue >= HE_HUE_RANGE[1])
    ink = (off_hue & (saturation >= INK_MIN_SATURATION)) | (value < BLACK_INK_MAX_VALUE)
    # Strokes are large; small off-hue or black specks are dark nuclei, blood cells or debris.
    ink = _drop_small_components(ink, INK_MIN_AREA_FRACTION * ink.size)
    return cv2.dilate(ink.astype(np.uint8), _CROSS).astype(bool)  # one step of 4-connected growth


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def saturation_threshold(saturation: np.ndarray, candidates: np.ndarray) -> float:
    """Otsu's threshold on the candidate pixels' saturation, clipped to SATURATION_THRESHOLD_RANGE."""
    low, high = SATURATION_THRESHOLD_RANGE
    values = saturation[candidates]
    if values.size == 0 or values.min() == values.max():
        return float(low)
    return float(np.clip(threshold_otsu(values), low, high))


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)).astype(bool)


def clean_mask(mask: np.ndarray, min_area_fraction: float) -> np.ndarray:
    """Close gaps, fill small holes, drop small objects; sizes scale with the image."""
    area = mask.shape[0] * mask.shape[1]
    radius = max(1, round(max(mask.shape) / 512))
    # Pad before closing so that tissue touching the border is not eroded by it.
    padded = np.pad(mask, radius, mode="edge")
    # OpenCV's closing: ~10x faster than scipy's; the padding keeps every kept pixel's
    # neighbourhood inside the array, so the two libraries' border rules never apply.
    closing = cv2.morphologyEx(padded.astype(np.uint8), cv2.MORPH_CLOSE, _disk(radius).astype(np.uint8))
    closed = closing[radius:-radius, radius:-radius].astype(bool)
    filled = ~_drop_small_components(~closed, MAX_HOLE_FRACTION * area)
    return _drop_small_components(filled, min_area_fraction * area)


def _drop_small_components(mask: np.ndarray, min_size: float) -> np.ndarray:
    """`mask` without its 4-connected components of fewer than `min_size` pixels."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_size
    keep[0] = False  # OpenCV's label 0 is the background
    return keep[labels]


def tissue_mask(thumbnail: np.ndarray, min_area_fraction: float = 1e-4) -> np.ndarray:
    """bool [h, w]: tissue on a low-resolution RGB image. Blank glass and pen ink are not tissue."""
    if thumbnail.ndim != 3 or thumbnail.shape[-1] != 3 or thumbnail.dtype != np.uint8:
        raise ValueError(f"tissue_mask needs an RGB uint8 image [h, w, 3], got {thumbnail.dtype} {thumbnail.shape}")
    ink = ink_mask(thumbnail)
    _, saturation, _ = hue_saturation_value(thumbnail)
    threshold = saturation_threshold(saturation, ~ink)
    stained = (saturation >= threshold) & (optical_density(thumbnail) >= MIN_OPTICAL_DENSITY) & ~ink
    return clean_mask(stained, min_area_fraction) & ~ink


def load_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A user-supplied mask image (nonzero = tissue) as bool `shape` (h, w), resized by nearest neighbour.

    Colour masks count a pixel as tissue if any colour channel is nonzero (and, with an alpha
    channel, the pixel is not transparent). Raises SlideError naming the file if it cannot be read.
    """
    path = Path(path)
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if pixels is None and path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        pixels = _read_tiff_or_none(path)
    if pixels is None:
        cause = "file not found" if not path.is_file() else "not a readable image"
        raise SlideError(f"cannot read tissue mask {path}: {cause}")
    if pixels.ndim == 3 and pixels.shape[-1] in (2, 4):
        tissue = (pixels[..., :-1] != 0).any(axis=-1) & (pixels[..., -1] != 0)
    else:
        tissue = pixels != 0 if pixels.ndim == 2 else (pixels != 0).any(axis=-1)
    height, width = shape
    if not same_proportions(tissue.shape, shape):  # another slide's mask, or a crop: not stretched over this one
        raise SlideError(
            f"tissue mask {path} is {tissue.shape[1]} x {tissue.shape[0]} px, {tissue.shape[1] / tissue.shape[0]:.3g} "
            f"times as wide as high, the slide {width / height:.3g} times: a mask image covers the whole slide "
            "(at any scale)"
        )
    resized = cv2.resize(tissue.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool)


def load_geojson_mask(path: str | Path, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Regions drawn on the slide (a GeoJSON FeatureCollection, Feature or list of Features, as
    QuPath exports annotations: Polygon and MultiPolygon in level-0 pixels) as bool ``shape``
    (h, w) at ``scale`` mask pixels per level-0 pixel: inside a region's outer ring and outside
    its holes. Other geometries (points, lines) are ignored. Raises SlideError naming the file if
    it cannot be read or holds no region."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise SlideError(f"cannot read tissue mask {path}: {err}") from err
    except json.JSONDecodeError as err:
        raise SlideError(f"cannot read tissue mask {path}: not GeoJSON ({err})") from err
    features = data.get("features", [data]) if isinstance(data, dict) else data
    polygons = []
    for item in features if isinstance(features, list) else []:
        geometry = item.get("geometry", item) if isinstance(item, dict) else {}
        if geometry.get("type") == "Polygon":
            polygons.append(geometry["coordinates"])
        elif geometry.get("type") == "MultiPolygon":
            polygons += geometry["coordinates"]
    if not polygons:
        hint = "QuPath: File > Export objects as GeoJSON, annotations"
        raise SlideError(f"cannot read tissue mask {path}: no Polygon or MultiPolygon in it ({hint})")
    mask, placed = np.zeros(shape, bool), 0
    try:
        for rings in polygons:  # each region on its own (a hole cuts its own region only), then added
            points = [np.round(np.asarray(ring, np.float64)[:, :2] * scale).astype(np.int32) for ring in rings]
            x0, y0 = np.maximum(points[0].min(axis=0), 0)
            x1, y1 = np.minimum(points[0].max(axis=0) + 1, (shape[1], shape[0]))
            if x1 <= x0 or y1 <= y0:  # outside the slide
                continue
            placed += 1
            region = np.zeros((y1 - y0, x1 - x0), np.uint8)
            for k, ring in enumerate(points):
                cv2.fillPoly(region, [ring - (x0, y0)], 0 if k else 1)
            mask[y0:y1, x0:x1] |= region.astype(bool)
    except (ValueError, IndexError, TypeError, cv2.error) as err:
        raise SlideError(f"cannot read tissue mask {path}: a region is not a list of [x, y] rings ({err})") from err
    if not placed:  # else "no tissue": coordinates in microns, or another slide's regions
        width, height = round(shape[1] / scale), round(shape[0] / scale)
        which = "its region lies" if len(polygons) == 1 else f"all {len(polygons)} of its regions lie"
        raise SlideError(
            f"tissue mask {path}: {which} outside the slide ({width} x {height} px); "
            "its coordinates must be the slide's level-0 pixels, as QuPath exports them"
        )
    return mask


def same_proportions(shape: tuple[int, int], other: tuple[int, int]) -> bool:
    """Whether two images of ``shape`` and ``other`` (h, w) can show the same area: their proportions
    agree to 1 %, or to what rounding each side to whole pixels allows."""
    (h, w), (oh, ow) = shape, other
    slack = 0.01 + 1 / min(h, w) + 1 / min(oh, ow)
    return abs((h / w) / (oh / ow) - 1) <= slack


def _read_tiff_or_none(path: Path) -> np.ndarray | None:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except Exception:
        return None
