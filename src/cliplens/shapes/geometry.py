"""Which pixels an object paints: exact silhouettes sampled at pixel centres, times a fill pattern.

No anti-aliasing on purpose: a pixel either belongs to an object (and then carries exactly the object's colour) or it
does not, which makes the per-object masks exact ground truth for segmentation. Shapes live in unit coordinates
(u, v) = ((x - cx) / r, (y - cy) / r), y pointing down, and every shape fits inside the radius `EXTENT`.
"""

from __future__ import annotations

import math

import numpy as np

EXTENT = 1.07  # the farthest any shape reaches from its centre, in radii (the square's corner: 0.75 * sqrt(2))

RING_INNER = 0.5
CIRCLE_RADIUS = 0.9


def _star(points: int = 5, inner: float = 0.42) -> tuple[tuple[float, float], ...]:
    corners = []
    for k in range(2 * points):
        angle = -math.pi / 2 + k * math.pi / points
        radius = 1.0 if k % 2 == 0 else inner
        corners.append((radius * math.cos(angle), radius * math.sin(angle)))
    return tuple(corners)


_ARM = 0.3
POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {
    "square": ((-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)),
    "triangle": ((0.0, -1.0), (math.sqrt(3) / 2, 0.5), (-math.sqrt(3) / 2, 0.5)),
    "star": _star(),
    "cross": (
        (-_ARM, -1.0), (_ARM, -1.0), (_ARM, -_ARM), (1.0, -_ARM), (1.0, _ARM), (_ARM, _ARM),
        (_ARM, 1.0), (-_ARM, 1.0), (-_ARM, _ARM), (-1.0, _ARM), (-1.0, -_ARM), (-_ARM, -_ARM),
    ),
}


def _edges(corners: tuple[tuple[float, float], ...]) -> tuple[np.ndarray, ...]:
    """Per-edge arrays [E, 1, 1]: start u, start v, end v and du/dv (0 for horizontal edges, which never straddle)."""
    start = np.asarray(corners, dtype=np.float64)
    end = np.roll(start, -1, axis=0)
    dv = end[:, 1] - start[:, 1]
    slope = np.divide(end[:, 0] - start[:, 0], dv, out=np.zeros_like(dv), where=dv != 0)
    return tuple(a[:, None, None] for a in (start[:, 0], start[:, 1], end[:, 1], slope))


_POLYGON_EDGES = {name: _edges(corners) for name, corners in POLYGONS.items()}


def _inside_polygon(u: np.ndarray, v: np.ndarray, edges: tuple[np.ndarray, ...]) -> np.ndarray:
    """Even-odd rule, all edges at once: count the edges crossed by a ray from each point towards +u."""
    u0, v0, v1, slope = edges
    straddles = (v0 > v) != (v1 > v)
    crossings = straddles & (u < u0 + (v - v0) * slope)
    return crossings.sum(0) % 2 == 1


def silhouette(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean membership of unit-coordinate points in `shape`."""
    if shape in POLYGONS:
        return _inside_polygon(u, v, _POLYGON_EDGES[shape])
    rho2 = u * u + v * v
    if shape == "circle":
        return rho2 <= CIRCLE_RADIUS**2
    if shape == "ring":
        return (rho2 <= 1.0) & (rho2 >= RING_INNER**2)
    raise ValueError(f"unknown shape {shape!r}")


def pattern_unit(image_size: int) -> int:
    """Stripe and dot pitch in pixels: 2 px at 64 px, scaled with the image so textures stay visible."""
    return max(1, round(image_size / 32))


def texture_mask(texture: str, columns: np.ndarray, rows: np.ndarray, image_size: int) -> np.ndarray:
    """Which pixels (integer column/row indices) a texture paints: solid all, striped every other band of rows,
    dotted a lattice of square dots two units wide with one-unit gaps (dense enough to keep the silhouette)."""
    unit = pattern_unit(image_size)
    if texture == "solid":
        return np.ones(np.broadcast_shapes(columns.shape, rows.shape), dtype=bool)
    if texture == "striped":
        return np.broadcast_to((rows // unit) % 2 == 0, np.broadcast_shapes(columns.shape, rows.shape))
    if texture == "dotted":
        return ((columns // unit) % 3 != 2) & ((rows // unit) % 3 != 2)
    raise ValueError(f"unknown texture {texture!r}")


def object_mask(
    shape: str, texture: str, centre: tuple[float, float], radius: float, image_size: int
) -> np.ndarray:
    """The [H, W] mask of pixels the object paints; only its bounding box is evaluated."""
    mask = np.zeros((image_size, image_size), dtype=bool)
    cx, cy = centre
    reach = EXTENT * radius + 1
    x0, x1 = max(0, int(cx - reach)), min(image_size, int(cx + reach) + 1)
    y0, y1 = max(0, int(cy - reach)), min(image_size, int(cy + reach) + 1)
    columns = np.arange(x0, x1)[None, :]
    rows = np.arange(y0, y1)[:, None]
    u = (columns + 0.5 - cx) / radius
    v = (rows + 0.5 - cy) / radius
    mask[y0:y1, x0:x1] = silhouette(shape, u, v) & texture_mask(texture, columns, rows, image_size)
    return mask
