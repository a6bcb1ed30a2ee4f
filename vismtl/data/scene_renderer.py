"""Procedural 3-D scenes rendered by analytic ray casting, with consistent dense labels.

Scene model (world frame: X right, Y up, Z forward, metres):

* A pinhole camera at the origin looks along +Z, pitched down by 5-20 degrees, with a
  horizontal field of view of 50-70 degrees, square pixels and the principal point at
  the image centre. Pixel ``(col, row)`` has its centre at image coordinates
  ``(col, row)``: ``intrinsics = [fx, fy, cx, cy]``, ``cx = (W-1)/2``, ``cy = (H-1)/2``.
* A floor ``Y = -h`` (h in 1.2-1.8 m) and a back wall ``Z = D`` (D in 5-10 m) facing
  the camera. Every ray hits one of them, so every pixel has a surface.
* 2-6 objects rest on the floor with disjoint footprints: sphere, box (random yaw),
  cylinder and cone (vertical axes, apex up) and at most one "figure" (legs cylinder,
  wider torso cylinder, head sphere). Intersections are closed-form; the nearest wins.
* Lambertian shading from a random directional light plus ambient, blob shadows on the
  floor, floor and wall textures attached to world coordinates, random object colours
  (colour never reveals the class) and mild per-pixel sensor noise.

Label conventions:

* ``depth``: z-depth in metres along the optical axis (not the ray length), > 0.
* ``normals``: unit outward surface normals in the camera frame: x to the right (image
  column direction), y up (against the image row direction), z towards the viewer. The
  camera looks along -z: depth ``d`` at pixel (col, row) back-projects to the point
  ``((col - cx) / fx * d, -(row - cy) / fy * d, -d)``. For pitch ``p`` the floor normal
  is ``(0, cos p, sin p)`` and the wall normal ``(0, -sin p, cos p)``. Every visible
  normal faces the camera (``n . point < 0``); ``n_z > 0`` holds on floor and wall but
  not on all object flanks seen obliquely near the image border, where perspective
  shows surfaces with slightly negative ``n_z``.
* ``instances``: 0 wall, 1 floor, 2.. objects (a figure is one instance). ``edge`` marks
  pixels whose instance differs from their right or bottom neighbour; ``saliency``
  marks object pixels.
* ``parts``: 1 head, 2 torso, 3 legs on figure pixels, 0 elsewhere; all ``IGNORE`` when
  no figure pixel is visible (the PASCAL convention for images without persons).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

SEMSEG_CLASSES = ("wall", "floor", "sphere", "box", "cylinder", "cone", "figure")
PART_CLASSES = ("background", "head", "torso", "legs")
IGNORE = 255

_WALL, _FLOOR, _SPHERE, _BOX, _CYLINDER, _CONE, _FIGURE = range(7)
_HEAD, _TORSO, _LEGS = 1, 2, 3
_F32 = np.float32
_INF = np.float32(np.inf)

# (t, nx, ny, nz): hit z-depth (inf on a miss) and world-frame normal components
_Hit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_Rng = np.random.Generator


@dataclass(frozen=True)
class _Camera:
    fx: float
    cx: float
    cy: float
    pitch: float
    floor_h: float  # camera height above the floor
    wall_d: float  # distance of the back wall
    # Ray directions are separable (no roll): X varies per column, Y and Z per row.
    # Their forward component is 1, so the ray parameter t of a hit is its z-depth.
    dx: np.ndarray  # (1, W)
    dy: np.ndarray  # (H, 1)
    dz: np.ndarray  # (H, 1)


@dataclass(frozen=True)
class _Prim:
    kind: str  # "sphere" | "box" | "cylinder" | "cone"
    # centre: of a sphere or box; of the base disc of a cylinder or cone
    centre: tuple[float, float, float]
    # size: sphere (r, -, -); box half extents; cylinder and cone (r, height, -)
    size: tuple[float, float, float]
    yaw: float = 0.0
    part: int = 0


@dataclass(frozen=True)
class _Object:
    class_id: int
    prims: tuple[_Prim, ...]
    colour: np.ndarray  # (3,) albedo
    x: float
    z: float
    radius: float  # footprint radius (bounds the object in X and Z)
    height: float


@dataclass
class _Frame:
    depth: np.ndarray  # (H, W) z-buffer
    normal: np.ndarray  # (3, H, W) world-frame normals
    inst: np.ndarray  # (H, W) int32
    part: np.ndarray  # (H, W) uint8
    albedo: np.ndarray  # (3, H, W): planar, per-channel ops beat (..., 3) layouts
    first_floor_row: int  # the floor/wall corner projects to a horizontal line


def _sample_camera(rng: _Rng, height: int, width: int) -> _Camera:
    hfov = math.radians(rng.uniform(50.0, 70.0))
    pitch = math.radians(rng.uniform(5.0, 20.0))
    fx = (width / 2) / math.tan(hfov / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a = ((np.arange(width, dtype=_F32) - cx) / fx)[None, :]
    b = (-(np.arange(height, dtype=_F32) - cy) / fx)[:, None]
    floor_h, wall_d = rng.uniform(1.2, 1.8), rng.uniform(5.0, 10.0)
    sp, cp = math.sin(pitch), math.cos(pitch)
    return _Camera(fx, cx, cy, pitch, floor_h, wall_d, a, b * cp - sp, b * sp + cp)


def _sample_dims(rng: _Rng, cls: int) -> tuple[float, float, tuple]:
    """Shape parameters of one object: (footprint radius, height, parameters)."""
    if cls == _SPHERE:
        r = rng.uniform(0.15, 0.6)
        return r, 2 * r, (r,)
    if cls == _BOX:
        hx, hy, hz = rng.uniform(0.15, 0.6, 3).tolist()
        return math.hypot(hx, hz), 2 * hy, (hx, hy, hz, rng.uniform(0.0, math.pi / 2))
    if cls in (_CYLINDER, _CONE):
        r, h = rng.uniform(0.15, 0.55), rng.uniform(0.3, 1.2)
        return r, h, (r, h)
    size = rng.uniform(1.0, 1.6)  # figure: total height, about a person's next to the camera
    legs_r, legs_h = size * rng.uniform(0.07, 0.1), size * rng.uniform(0.38, 0.45)
    torso_r, torso_h = size * rng.uniform(0.13, 0.18), size * rng.uniform(0.3, 0.38)
    head_r = (size - legs_h - torso_h) / 2
    return max(torso_r, head_r), size, (legs_r, legs_h, torso_r, torso_h, head_r)


def _build_prims(cls: int, x: float, y: float, z: float, p: tuple) -> tuple[_Prim, ...]:
    """Primitives of an object whose footprint centre is (x, y, z) on the floor."""
    if cls == _SPHERE:
        return (_Prim("sphere", (x, y + p[0], z), (p[0], 0.0, 0.0)),)
    if cls == _BOX:
        return (_Prim("box", (x, y + p[1], z), p[:3], yaw=p[3]),)
    if cls in (_CYLINDER, _CONE):
        kind = "cylinder" if cls == _CYLINDER else "cone"
        return (_Prim(kind, (x, y, z), (p[0], p[1], 0.0)),)
    legs_r, legs_h, torso_r, torso_h, head_r = p
    head_y = y + legs_h + torso_h + head_r
    return (
        _Prim("cylinder", (x, y, z), (legs_r, legs_h, 0.0), part=_LEGS),
        _Prim("cylinder", (x, y + legs_h, z), (torso_r, torso_h, 0.0), part=_TORSO),
        _Prim("sphere", (x, head_y, z), (head_r, 0.0, 0.0), part=_HEAD),
    )


def _place_object(rng: _Rng, cam: _Camera, cls: int, placed: list[_Object]) -> _Object | None:
    """Rejection-sample a visible floor position whose footprint overlaps nothing."""
    sp, cp = math.sin(cam.pitch), math.cos(cam.pitch)
    # nearest visible floor point: where the bottom image row meets the floor
    z_near = -cam.floor_h / float(cam.dy[-1, 0]) * float(cam.dz[-1, 0])
    for _ in range(30):
        radius, height, params = _sample_dims(rng, cls)
        z_lo, z_hi = max(z_near, 1.0) + radius, cam.wall_d - radius - 0.15
        if z_lo >= z_hi:
            continue
        if cls == _FIGURE:  # keep figures near enough that their parts span several pixels
            z_hi = min(z_hi, z_lo + 2.5)
        z = rng.uniform(z_lo, z_hi)
        half_width = 0.85 * cam.cx / cam.fx * (cam.floor_h * sp + z * cp)
        x = rng.uniform(-half_width, half_width)
        if all(math.hypot(x - o.x, z - o.z) > radius + o.radius + 0.05 for o in placed):
            prims = _build_prims(cls, x, -cam.floor_h, z, params)
            colour = rng.uniform(0.08, 0.95, 3).astype(_F32)
            return _Object(cls, prims, colour, x, z, radius, height)
    return None


def _sample_objects(rng: _Rng, cam: _Camera) -> list[_Object]:
    count = int(rng.integers(2, 7))
    classes = rng.integers(_SPHERE, _FIGURE, count).tolist()
    if rng.random() < 0.5:
        classes[0] = _FIGURE  # placed first so crowding rarely removes it
    objects: list[_Object] = []
    for cls in classes:
        obj = _place_object(rng, cam, cls, objects)
        if obj is not None:
            objects.append(obj)
    return objects


def _hit_sphere(p: _Prim, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> _Hit:
    (x0, y0, z0), r = p.centre, p.size[0]
    # |t d - c|^2 = r^2  ->  a t^2 - 2 b t + c = 0
    a = dx * dx + (dy * dy + dz * dz)
    b = dx * x0 + (dy * y0 + dz * z0)
    disc = b * b - a * (x0 * x0 + y0 * y0 + z0 * z0 - r * r)
    t = (b - np.sqrt(disc)) / a  # nan where disc < 0
    t = np.where(t > 0, t, _INF)
    return t, (t * dx - x0) / r, (t * dy - y0) / r, (t * dz - z0) / r


def _hit_cylinder(p: _Prim, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> _Hit:
    (x0, y0, z0), (r, h, _) = p.centre, p.size
    a = dx * dx + dz * dz
    b = dx * x0 + dz * z0
    t = (b - np.sqrt(b * b - a * (x0 * x0 + z0 * z0 - r * r))) / a
    y = t * dy
    t = np.where((t > 0) & (y >= y0) & (y <= y0 + h), t, _INF)
    nx, ny, nz = (t * dx - x0) / r, np.zeros_like(t), (t * dz - z0) / r
    # Only the top cap can face the camera (the camera is above every object's base).
    if y0 + h < 0.0:
        tc = (y0 + h) / dy
        cap = (tc > 0) & (tc < t) & ((tc * dx - x0) ** 2 + (tc * dz - z0) ** 2 <= r * r)
        t = np.where(cap, tc, t)
        nx, ny, nz = np.where(cap, 0.0, nx), cap.astype(_F32), np.where(cap, 0.0, nz)
    return t, nx, ny, nz


def _hit_cone(p: _Prim, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> _Hit:
    (x0, y0, z0), (r, h, _) = p.centre, p.size
    k2, ya = (r / h) ** 2, y0 + h
    # (x - x0)^2 + (z - z0)^2 = k^2 (y - ya)^2 with origin-minus-apex (-x0, -ya, -z0)
    a = dx * dx + dz * dz - k2 * (dy * dy)
    b = -(dx * x0 + dz * z0) + k2 * (dy * ya)
    c = x0 * x0 + z0 * z0 - k2 * ya * ya
    s = np.sqrt(b * b - a * c)
    best = np.full(np.broadcast_shapes(a.shape, dx.shape), _INF)
    for t in ((-b - s) / a, (-b + s) / a):  # either root may lie on the lower nappe
        y = t * dy
        best = np.where((t > 0) & (t < best) & (y >= y0) & (y <= ya), t, best)
    # The base disc faces the floor and is never visible from above.
    nx, ny, nz = best * dx - x0, k2 * (ya - best * dy), best * dz - z0
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    return best, nx / norm, ny / norm, nz / norm


def _hit_box(p: _Prim, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> _Hit:
    (x0, y0, z0), half = p.centre, p.size
    c, s = math.cos(p.yaw), math.sin(p.yaw)
    # slab method in the box frame (rotated by yaw about Y, origin at the box centre)
    origin = (-c * x0 + s * z0, -y0, -s * x0 - c * z0)
    dirs = (c * dx - s * dz, dy, s * dx + c * dz)
    near, far = [], []
    for o, d, hlf in zip(origin, dirs, half, strict=True):
        t1, t2 = (-hlf - o) / d, (hlf - o) / d
        near.append(np.minimum(t1, t2))
        far.append(np.maximum(t1, t2))
    t_in = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_out = np.minimum(np.minimum(far[0], far[1]), far[2])
    t = np.where((t_in > 0) & (t_in <= t_out), t_in, _INF)
    on_x = near[0] >= t_in
    on_y = ~on_x & (near[1] >= t_in)
    on_z = ~(on_x | on_y)
    lx = np.where(on_x, -np.sign(dirs[0]), 0.0)
    lz = np.where(on_z, -np.sign(dirs[2]), 0.0)
    ny = np.where(on_y, -np.sign(dirs[1]), 0.0)
    return t, c * lx + s * lz, ny, -s * lx + c * lz


_HITTERS: dict[str, Callable[..., _Hit]] = {
    "sphere": _hit_sphere,
    "cylinder": _hit_cylinder,
    "cone": _hit_cone,
    "box": _hit_box,
}


def _screen_rect(cam: _Camera, obj: _Object, height: int, width: int) -> tuple[int, ...]:
    """Pixel rectangle (v0, v1, u0, u1) covering the projected bounding box of obj."""
    xs = (obj.x - obj.radius, obj.x + obj.radius)
    ys = (-cam.floor_h, -cam.floor_h + obj.height)
    zs = (obj.z - obj.radius, obj.z + obj.radius)
    corners = np.array([(x, y, z) for x in xs for y in ys for z in zs])
    sp, cp = math.sin(cam.pitch), math.cos(cam.pitch)
    depth = corners[:, 2] * cp - corners[:, 1] * sp
    if depth.min() < 1e-3:
        return 0, height, 0, width
    cols = cam.cx + cam.fx * corners[:, 0] / depth
    rows = cam.cy - cam.fx * (corners[:, 1] * cp + corners[:, 2] * sp) / depth
    v0, v1 = max(math.floor(rows.min()), 0), min(math.ceil(rows.max()) + 1, height)
    u0, u1 = max(math.floor(cols.min()), 0), min(math.ceil(cols.max()) + 1, width)
    return v0, v1, u0, u1


def _texture(rng: _Rng, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Albedo (3, h, w) of a textured plane at plane coordinates s (h, w), t (h, 1)."""
    kind = int(rng.integers(3))
    c0 = rng.uniform(0.15, 0.9, 3).astype(_F32)
    c1 = (c0 * rng.uniform(0.45, 0.85)).astype(_F32)
    interp = cv2.INTER_NEAREST
    if kind == 0:  # checker
        grid, cell = np.array([[0, 1], [1, 0]], _F32), rng.uniform(0.3, 0.9)
    elif kind == 1:  # stripes along either surface axis
        grid = np.array([[0, 1]] if rng.random() < 0.5 else [[0], [1]], _F32)
        cell = rng.uniform(0.1, 0.4)
    else:  # smooth value noise
        grid, cell = rng.random((8, 8), dtype=_F32), rng.uniform(0.2, 0.7)
        interp = cv2.INTER_LINEAR
    if s.size == 0:
        return np.empty((3, *s.shape), _F32)
    # remap samples the tiny pattern at world coordinates: textures stick to planes
    map_s = np.ascontiguousarray(s / _F32(cell))
    map_t = np.ascontiguousarray(np.broadcast_to(t / _F32(cell), s.shape))
    pattern = cv2.remap(grid, map_s, map_t, interp, borderMode=cv2.BORDER_WRAP)
    return (c0[:, None, None] + (c1 - c0)[:, None, None] * pattern).astype(_F32)


def _render_background(rng: _Rng, cam: _Camera, height: int, width: int) -> _Frame:
    t_floor = np.where(cam.dy < 0, -cam.floor_h / cam.dy, _INF)
    t_wall = np.where(cam.dz > 0, cam.wall_d / cam.dz, _INF)
    t = np.minimum(t_floor, t_wall)  # (H, 1): planes have one z-depth per row
    k = int(np.count_nonzero(t_floor >= t_wall))  # wall rows are the top k rows
    normal = np.zeros((3, height, width), _F32)
    normal[2, :k] = -1.0
    normal[1, k:] = 1.0
    inst = np.zeros((height, width), np.int32)
    inst[k:] = 1
    x = t * cam.dx
    albedo = np.empty((3, height, width), _F32)
    albedo[:, :k] = _texture(rng, x[:k], (t * cam.dy)[:k])  # wall: (X, Y)
    albedo[:, k:] = _texture(rng, x[k:], (t * cam.dz)[k:])  # floor: (X, Z)
    depth = np.empty((height, width), _F32)
    depth[:] = t  # a writable copy: the z-buffer is updated in place
    return _Frame(depth, normal, inst, np.zeros((height, width), np.uint8), albedo, k)


def _floor_shadows(cam: _Camera, frame: _Frame, objects: list[_Object], light: np.ndarray) -> np.ndarray:
    """Diffuse attenuation of the floor rows: soft blobs cast away from the light."""
    k = frame.first_floor_row
    t = frame.depth[k:, :1]
    x, z = t * cam.dx, t * cam.dz[k:]
    shadow = np.ones(x.shape, _F32)
    for obj in objects:
        # shadow of the object's mid-height point, cast along the light onto the floor
        sx = obj.x - light[0] / light[1] * obj.height * 0.5
        sz = obj.z - light[2] / light[1] * obj.height * 0.5
        inv_r2 = 1.0 / (1.3 * obj.radius) ** 2
        falloff = 1.0 - ((x - sx) ** 2 + (z - sz) ** 2) * inv_r2
        shadow *= 1.0 - 0.6 * np.maximum(falloff, 0.0)
    return shadow


def _draw_object(cam: _Camera, frame: _Frame, obj: _Object, inst_id: int) -> None:
    """Z-buffer obj into the frame, ray casting only inside its screen rectangle."""
    v0, v1, u0, u1 = _screen_rect(cam, obj, *frame.inst.shape)
    if v0 >= v1 or u0 >= u1:
        return
    dx, dy, dz = cam.dx[:, u0:u1], cam.dy[v0:v1], cam.dz[v0:v1]
    t, nx, ny, nz = _HITTERS[obj.prims[0].kind](obj.prims[0], dx, dy, dz)
    part: np.ndarray | int = obj.prims[0].part
    for prim in obj.prims[1:]:  # multi-part objects: keep the nearest part per pixel
        t2, nx2, ny2, nz2 = _HITTERS[prim.kind](prim, dx, dy, dz)
        m = t2 < t
        pairs = ((t2, t), (nx2, nx), (ny2, ny), (nz2, nz))
        t, nx, ny, nz = (np.where(m, new, old) for new, old in pairs)
        part = np.where(m, np.uint8(prim.part), part)
    region = (slice(v0, v1), slice(u0, u1))
    visible = t < frame.depth[region]
    np.copyto(frame.depth[region], t, where=visible)
    for channel, n in zip(frame.normal[:, v0:v1, u0:u1], (nx, ny, nz), strict=True):
        np.copyto(channel, n, where=visible)
    np.copyto(frame.inst[region], inst_id, where=visible)
    np.copyto(frame.part[region], part, where=visible, casting="unsafe")
    for channel, value in zip(frame.albedo[:, v0:v1, u0:u1], obj.colour, strict=True):
        np.copyto(channel, value, where=visible)


def _sample_light(rng: _Rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direction towards the light (above, camera side), light and ambient colours."""
    elev, azim = math.radians(rng.uniform(35, 70)), math.radians(rng.uniform(-70, 70))
    ce = math.cos(elev)
    direction = np.array([ce * math.sin(azim), math.sin(elev), -ce * math.cos(azim)], _F32)
    warmth = rng.uniform(-1.0, 1.0)  # > 0 warm, < 0 cool
    tint = np.array([1 + 0.15 * warmth, 1.0, 1 - 0.15 * warmth], _F32)
    colour = tint * _F32(rng.uniform(0.6, 0.85))
    # ambient sky light is tinted opposite to the direct light
    ambient = (1.3 - 0.3 * tint) * _F32(rng.uniform(0.2, 0.4))
    return direction, colour, ambient


def _shade(rng: _Rng, frame: _Frame, light: tuple, shadow: np.ndarray) -> np.ndarray:
    """Lambertian + ambient shading with sensor noise; uint8 (H, W, 3) RGB."""
    direction, colour, ambient = light
    n = frame.normal
    lx, ly, lz = direction
    diffuse = np.maximum(n[0] * lx + n[1] * ly + n[2] * lz, 0.0)
    k = frame.first_floor_row
    floor = frame.inst[k:] == 1  # objects standing on the floor are not darkened
    diffuse[k:] *= np.where(floor, shadow, _F32(1.0))
    # triangular noise from raw bytes (std 104.2 before scaling): ~7x cheaper than
    # Gaussian draws, which would dominate the render time
    raw = np.frombuffer(rng.bytes(2 * frame.albedo.size), np.uint8).reshape(2, -1)
    noise = (raw[0].astype(np.int16) - raw[1]).reshape(frame.albedo.shape)
    noise_scale = _F32(rng.uniform(0.5, 2.5) / 104.2)  # sensor noise std in 8-bit units
    planes = []
    for c in range(3):
        plane = frame.albedo[c] * (ambient[c] + diffuse * colour[c]) * _F32(255.0)
        plane += noise[c] * noise_scale
        planes.append(np.clip(plane, 0.0, 255.0).astype(np.uint8))
    return cv2.merge(planes)


def _camera_normals(cam: _Camera, normal: np.ndarray) -> np.ndarray:
    """World-frame (3, H, W) normals to camera-frame (H, W, 3) ones (x right, y up)."""
    sp, cp = math.sin(cam.pitch), math.cos(cam.pitch)
    nx, ny, nz = normal
    return np.stack([nx, ny * cp + nz * sp, ny * sp - nz * cp], axis=-1)


def _edges(inst: np.ndarray) -> np.ndarray:
    edge = np.zeros(inst.shape, np.uint8)
    edge[:, :-1] |= inst[:, :-1] != inst[:, 1:]
    edge[:-1, :] |= inst[:-1, :] != inst[1:, :]
    return edge


def render_scene(seed: int, index: int, height: int = 128, width: int = 128) -> dict[str, np.ndarray]:
    """Render scene ``index`` of dataset ``seed``, bit-identical for equal arguments.

    Returns ``image`` uint8 (H, W, 3) RGB, ``semseg`` uint8 (H, W), ``parts`` uint8
    (H, W), ``depth`` float32 (H, W), ``normals`` float32 (H, W, 3), ``edge`` uint8
    (H, W), ``saliency`` uint8 (H, W), ``instances`` int32 (H, W) and ``intrinsics``
    float32 ``[fx, fy, cx, cy]``; the module docstring gives the conventions.
    """
    rng = np.random.default_rng([seed, index])
    cam = _sample_camera(rng, height, width)
    objects = _sample_objects(rng, cam)
    light = _sample_light(rng)
    # ray misses travel through the maths as nan/inf on purpose
    with np.errstate(all="ignore"):
        frame = _render_background(rng, cam, height, width)
        shadow = _floor_shadows(cam, frame, objects, light[0])
        for i, obj in enumerate(objects):
            _draw_object(cam, frame, obj, inst_id=i + 2)
        image = _shade(rng, frame, light, shadow)
    classes = np.array([_WALL, _FLOOR] + [o.class_id for o in objects], np.uint8)
    semseg = classes[frame.inst]
    has_figure = bool(np.any(semseg == _FIGURE))
    return {
        "image": image,
        "semseg": semseg,
        "parts": frame.part if has_figure else np.full_like(frame.part, IGNORE),
        "depth": frame.depth,
        "normals": _camera_normals(cam, frame.normal),
        "edge": _edges(frame.inst),
        "saliency": (frame.inst >= 2).astype(np.uint8),
        "instances": frame.inst,
        "intrinsics": np.array([cam.fx, cam.fx, cam.cx, cam.cy], _F32),
    }
