"""A small synthetic MVTec-layout dataset: textures and objects with realistic defects.

Classes (`SYNTHETIC_CLASSES`): textures "wood" (grain rings), "grid" (a wire mesh),
"fabric" (a plain weave) and objects "disc" (a machined metal disc) and "nut" (a hexagon nut),
each rendered with numpy on whole-image coordinate grids (no per-pixel Python loops).
Normal images vary in position, rotation, lighting, colour and texture phase. Defects:
scratches, holes, stains, missing parts and colour changes, each of a class's three types
clearly visible. The mask of a defective image is exactly the set of pixels where the written
image differs from the defect-free rendering of the same image (`render_sample` returns both).
Deterministic for a seed: every image has its own seed derived from (seed, class, split, index).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SYNTHETIC_CLASSES = {
    "wood": ("scratch", "hole", "color"),
    "grid": ("scratch", "hole", "stain"),
    "fabric": ("hole", "stain", "color"),
    "disc": ("scratch", "missing", "color"),
    "nut": ("scratch", "missing", "stain"),
}
DEFAULT_CLASSES = ("wood", "grid", "nut")
_MAX_DEFECT_ATTEMPTS = 20  # redraws of a defect that would change fewer than a few pixels


@dataclass
class SyntheticSample:
    """One rendered image: image (H, W, 3) uint8, clean (its defect-free version), mask (H, W)
    bool (True exactly where image != clean)."""

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray


@dataclass
class _Scene:
    """A normal rendering before noise: colour (H, W, 3) float32 in [0, 255], where the product
    is (H, W) bool, its background colour (H, W, 3), centre (y, x) and radius in pixels."""

    color: np.ndarray
    product: np.ndarray
    background: np.ndarray
    center: tuple[float, float]
    radius: float


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def _rotate(yy: np.ndarray, xx: np.ndarray, angle: float, center: tuple[float, float]):
    """Coordinates (u along the rotated x axis, v along the rotated y axis) about `center`."""
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lighting(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 1) smooth multiplicative illumination: a random gradient and overall gain."""
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / size - 0.5
    return (rng.uniform(0.88, 1.08) * (1.0 + rng.uniform(0.0, 0.16) * ramp))[..., None]


def _mix(dark: np.ndarray, light: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two RGB colours (3,) by t (H, W) in [0, 1] -> (H, W, 3)."""
    return dark + (light - dark) * t[..., None]


def _render_wood(rng, size, scale):
    yy, xx = _grid(size)
    u, v = _rotate(yy, xx, rng.uniform(-0.35, 0.35), (size / 2, size / 2))
    freq = rng.uniform(0.040, 0.055) / scale
    warp = 7 * scale * np.sin(2 * np.pi * v / (rng.uniform(90, 140) * scale) + rng.uniform(0, 6.3))
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (u + warp) + rng.uniform(0, 6.3))
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (u + 0.4 * warp) / (3.1 * scale))
    tone = np.clip(0.75 * rings ** 1.5 + 0.25 * grain, 0, 1)
    jitter = rng.uniform(-12, 12, 3)
    color = _mix(np.array([105, 62, 30]) + jitter, np.array([196, 146, 92]) + jitter, tone)
    color = color * _lighting(rng, yy, xx, size)
    return _Scene(color, np.ones((size, size), bool), color, (size / 2, size / 2), size / 2)


def _render_grid(rng, size, scale):
    yy, xx = _grid(size)
    u, v = _rotate(yy, xx, rng.uniform(-0.08, 0.08), (size / 2, size / 2))
    period = rng.uniform(20, 25) * scale
    half = rng.uniform(1.4, 1.9) * scale
    du = np.abs(np.mod(u + rng.uniform(0, period), period) - period / 2)
    dv = np.abs(np.mod(v + rng.uniform(0, period), period) - period / 2)
    wire = np.maximum(_smoothstep(half + scale, half, period / 2 - du),
                      _smoothstep(half + scale, half, period / 2 - dv))
    base = np.array([186, 188, 182]) + rng.uniform(-10, 10)
    color = _mix(base, np.array([58, 60, 70]), wire) * _lighting(rng, yy, xx, size)
    return _Scene(color, np.ones((size, size), bool), color, (size / 2, size / 2), size / 2)


def _render_fabric(rng, size, scale):
    yy, xx = _grid(size)
    u, v = _rotate(yy, xx, rng.uniform(-0.12, 0.12), (size / 2, size / 2))
    period = rng.uniform(9, 11) * scale
    cu, cv = u / period + rng.uniform(0, 1), v / period + rng.uniform(0, 1)
    over = (np.floor(cu) + np.floor(cv)) % 2 == 0
    thread = np.where(over, np.sin(np.pi * np.mod(cv, 1.0)), np.sin(np.pi * np.mod(cu, 1.0)))
    jitter = rng.uniform(-10, 10, 3)
    color = _mix(np.array([40, 64, 112]) + jitter, np.array([98, 130, 186]) + jitter, thread)
    color = color * _lighting(rng, yy, xx, size)
    return _Scene(color, np.ones((size, size), bool), color, (size / 2, size / 2), size / 2)


def _background(rng, size, yy, xx):
    gray = rng.uniform(38, 52)
    return np.full((size, size, 3), gray, np.float32) * _lighting(rng, yy, xx, size)


def _render_disc(rng, size, scale):
    yy, xx = _grid(size)
    center = (size / 2 + rng.uniform(-10, 10) * scale, size / 2 + rng.uniform(-10, 10) * scale)
    radius = rng.uniform(76, 84) * scale
    u, v = _rotate(yy, xx, rng.uniform(0, 2 * np.pi), center)
    r = np.hypot(u, v)
    inside = _smoothstep(radius + 1.0, radius - 1.0, r)
    shade = 0.78 + 0.22 * np.cos(np.arctan2(v, u) * 2.0) * (r / radius)
    groove = 1.0 - 0.45 * _smoothstep(3.5 * scale, 1.5 * scale, np.abs(r - 0.62 * radius))
    mark = (np.abs(v) < 4 * scale) & (u > 0.72 * radius) & (u < 0.9 * radius)
    metal = np.array([172, 176, 184]) + rng.uniform(-8, 8)
    disc = metal * (shade * groove * np.where(mark, 0.45, 1.0))[..., None]
    background = _background(rng, size, yy, xx)
    color = inside[..., None] * disc + (1 - inside)[..., None] * background
    color = color * _lighting(rng, yy, xx, size)
    return _Scene(color, r < radius - 2, background, center, radius)


def _render_nut(rng, size, scale):
    yy, xx = _grid(size)
    center = (size / 2 + rng.uniform(-10, 10) * scale, size / 2 + rng.uniform(-10, 10) * scale)
    apothem = rng.uniform(66, 74) * scale
    u, v = _rotate(yy, xx, rng.uniform(0, np.pi / 3), center)
    angles = np.arange(6) * np.pi / 3
    projections = u[None] * np.cos(angles)[:, None, None] + v[None] * np.sin(angles)[:, None, None]
    facet = np.argmax(projections, axis=0)
    hexagon = np.max(projections, axis=0)
    r = np.hypot(u, v)
    hole_radius = 0.42 * apothem
    body = _smoothstep(apothem + 1.0, apothem - 1.0, hexagon) * _smoothstep(hole_radius - 1.0, hole_radius + 1.0, r)
    chamfer = np.where(hexagon > apothem - 7 * scale, 0.8 + 0.05 * (facet % 3), 1.0)
    thread = 1.0 - 0.35 * _smoothstep(hole_radius + 6 * scale, hole_radius, r)
    brass = np.array([186, 150, 78]) + rng.uniform(-10, 10, 3)
    nut = brass * (chamfer * thread)[..., None]
    background = _background(rng, size, yy, xx)
    color = body[..., None] * nut + (1 - body)[..., None] * background
    color = color * _lighting(rng, yy, xx, size)
    product = (hexagon < apothem - 2) & (r > hole_radius + 2)
    return _Scene(color, product, background, center, apothem)


_RENDERERS = {
    "wood": _render_wood,
    "grid": _render_grid,
    "fabric": _render_fabric,
    "disc": _render_disc,
    "nut": _render_nut,
}


def _pick_point(rng, product: np.ndarray, margin: int) -> tuple[float, float]:
    """A random (y, x) inside `product`, at least `margin` pixels from the image border."""
    inner = np.zeros_like(product)
    inner[margin:-margin, margin:-margin] = product[margin:-margin, margin:-margin]
    candidates = np.flatnonzero(inner)
    index = candidates[rng.integers(candidates.size)]
    return float(index // product.shape[1]) + 0.5, float(index % product.shape[1]) + 0.5


def _blob(rng, size, center, radius) -> np.ndarray:
    """(H, W) bool irregular blob: radius modulated by two angular harmonics."""
    yy, xx = _grid(size)
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    wobble = (1 + 0.22 * np.sin(3 * theta + rng.uniform(0, 6.3))
              + 0.12 * np.sin(5 * theta + rng.uniform(0, 6.3)))
    return np.hypot(dy, dx) < radius * wobble


def _scratch(rng, size, scale, center) -> np.ndarray:
    """(H, W) bool thin curved line (a quadratic Bezier, 12 segments) through `center`."""
    length = rng.uniform(40, 70) * scale
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([direction[1], -direction[0]])
    start = np.array(center) - direction * length / 2
    end = np.array(center) + direction * length / 2
    control = np.array(center) + normal * rng.uniform(-0.3, 0.3) * length
    t = np.linspace(0, 1, 13)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end  # (13, 2)
    half_width = rng.uniform(1.4, 2.2) * scale
    # Distances only inside the curve's bounding box (+ the line's half width).
    top, left = np.maximum(np.floor(points.min(axis=0) - half_width - 1), 0).astype(int)
    bottom, right = np.minimum(np.ceil(points.max(axis=0) + half_width + 2), size).astype(int)
    yy, xx = _grid(size)
    pixel = np.stack([yy[top:bottom, left:right], xx[top:bottom, left:right]], axis=-1)[None]
    a, b = points[:-1, None, None, :], points[1:, None, None, :]  # segments (12, 1, 1, 2)
    ab, ap = b - a, pixel - a
    along = np.clip((ap * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    offset = ap - along[..., None] * ab
    distance = np.sqrt((offset * offset).sum(-1).min(axis=0))
    line = np.zeros((size, size), bool)
    line[top:bottom, left:right] = distance < half_width
    return line


def _contrast(color: np.ndarray) -> np.ndarray:
    """Strongly contrasting colour: dark where the image is light, light where it is dark."""
    luminance = color.mean(axis=-1, keepdims=True)
    return np.where(luminance > 110, color * 0.22, color * 0.3 + 175)


def _apply_defect(rng, defect: str, scene: _Scene, noisy: np.ndarray, size: int, scale: float):
    """(defective colour (H, W, 3), region (H, W) bool) for one defect on one scene."""
    margin = int(24 * scale)
    if defect == "missing":
        angle = rng.uniform(0, 2 * np.pi)
        edge = (scene.center[0] + scene.radius * np.sin(angle), scene.center[1] + scene.radius * np.cos(angle))
        region = _blob(rng, size, edge, rng.uniform(0.32, 0.42) * scene.radius) & scene.product
        return scene.background + (noisy - scene.color), region
    center = _pick_point(rng, scene.product, margin)
    if defect == "scratch":
        return _contrast(noisy), _scratch(rng, size, scale, center) & scene.product
    if defect == "hole":
        region = _blob(rng, size, center, rng.uniform(8, 13) * scale) & scene.product
        yy, xx = _grid(size)
        depth = np.hypot(yy - center[0], xx - center[1]) / (13 * scale)
        return np.repeat((12 + 20 * depth)[..., None], 3, axis=-1), region
    if defect == "stain":
        region = _blob(rng, size, center, rng.uniform(11, 17) * scale) & scene.product
        tint = np.array([0.62, 0.42, 0.18]) if rng.random() < 0.5 else np.array([0.25, 0.5, 0.3])
        return noisy * tint + np.array([30, 22, 8]), region
    region = _blob(rng, size, center, rng.uniform(13, 20) * scale) & scene.product
    return noisy[..., ::-1] * np.array([0.5, 1.1, 1.5]) + np.array([0, 25, 40]), region


def _quantise(color: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(color), 0, 255).astype(np.uint8)


def sample_seed(seed: int, class_name: str, split: str, index: int) -> list[int]:
    """The seed of one image of `make_synthetic`'s output (for re-rendering it)."""
    return [seed, zlib.crc32(class_name.encode()), zlib.crc32(split.encode()), index]


def render_sample(class_name: str, defect: str | None, image_size: int = 256, seed=0) -> SyntheticSample:
    """Render one image of `class_name` with `defect` (None or "good" for a normal image).

    Returns a `SyntheticSample`: the image, its defect-free rendering and the exact mask.
    """
    if class_name not in _RENDERERS:
        raise ValueError(f"unknown synthetic class {class_name!r}; available: {', '.join(SYNTHETIC_CLASSES)}")
    rng = np.random.default_rng(seed)
    scale = image_size / 256.0
    scene = _RENDERERS[class_name](rng, image_size, scale)
    noisy = scene.color + rng.normal(0.0, 2.5, scene.color.shape).astype(np.float32)
    clean = _quantise(noisy)
    if defect in (None, "good"):
        return SyntheticSample(clean, clean, np.zeros(clean.shape[:2], bool))
    if defect not in SYNTHETIC_CLASSES[class_name]:
        raise ValueError(f"class {class_name!r} has defects {SYNTHETIC_CLASSES[class_name]}, not {defect!r}")
    min_pixels = max(4, int(20 * scale * scale))
    for _ in range(_MAX_DEFECT_ATTEMPTS):
        defective, region = _apply_defect(rng, defect, scene, noisy, image_size, scale)
        image = np.where(region[..., None], _quantise(defective), clean)
        mask = (image != clean).any(axis=-1)
        if mask.sum() >= min_pixels:
            break
    return SyntheticSample(image, clean, mask)


def _test_plan(class_name: str, num_test: int) -> list[str]:
    """Defect type of each test image: about a third good, the rest spread over the defects."""
    defects = SYNTHETIC_CLASSES[class_name]
    num_good = max(1, round(num_test / 3)) if num_test > 1 else 0
    return ["good"] * num_good + [defects[i % len(defects)] for i in range(num_test - num_good)]


def make_synthetic(
    root: str | Path,
    classes: list[str] | tuple[str, ...] | None = None,
    num_train: int = 40,
    num_test: int = 20,
    image_size: int = 256,
    seed: int = 0,
) -> Path:
    """Write a synthetic MVTec-layout dataset under `root` and return `root`.

    Layout: root/<class>/train/good/NNN.png, root/<class>/test/<good|defect>/NNN.png,
    root/<class>/ground_truth/<defect>/NNN_mask.png (0/255).
    Args:
        classes: names from `SYNTHETIC_CLASSES` (default: wood, grid, nut).
        num_train, num_test: images per class; about a third of the test images are good.
        image_size: square side in pixels (16 to 1024).
        seed: the same seed writes the same files.
    """
    classes = list(DEFAULT_CLASSES if classes is None else classes)
    unknown = [name for name in classes if name not in SYNTHETIC_CLASSES]
    if unknown:
        raise ValueError(f"unknown synthetic class(es) {unknown}; available: {', '.join(SYNTHETIC_CLASSES)}")
    if not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 16 and 1024, got {image_size}")
    if num_train < 1 or num_test < 0:
        raise ValueError(f"need num_train >= 1 and num_test >= 0, got {num_train}, {num_test}")
    root = Path(root)
    for class_name in classes:
        train_dir = root / class_name / "train" / "good"
        train_dir.mkdir(parents=True, exist_ok=True)
        for index in range(num_train):
            sample = render_sample(class_name, None, image_size, sample_seed(seed, class_name, "train", index))
            Image.fromarray(sample.image).save(train_dir / f"{index:03d}.png", compress_level=1)
        for index, defect in enumerate(_test_plan(class_name, num_test)):
            sample = render_sample(class_name, defect, image_size, sample_seed(seed, class_name, "test", index))
            test_dir = root / class_name / "test" / defect
            test_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample.image).save(test_dir / f"{index:03d}.png", compress_level=1)
            if defect != "good":
                mask_dir = root / class_name / "ground_truth" / defect
                mask_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(sample.mask.astype(np.uint8) * 255).save(mask_dir / f"{index:03d}_mask.png")
    return root
