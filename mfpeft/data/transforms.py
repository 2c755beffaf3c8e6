"""Joint augmentations: the same flips and 90-degree rotations applied to every modality and the labels."""

from __future__ import annotations

import numpy as np

__all__ = ["random_flip_rotate"]


def random_flip_rotate(
    pixel_values: dict[str, np.ndarray],
    labels: np.ndarray | None,
    rng: np.random.Generator,
    *,
    flips: bool = True,
    rot90: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Flip vertically (p = 0.5) and horizontally (p = 0.5), then rotate by k * 90 degrees (k uniform in
    0..3, square chips only) when ``rot90``; one draw shared by all arrays, as the paper does.

    Args:
        pixel_values: modality -> (C, H, W) arrays.
        labels: (H, W) or None.
        rng: the random generator (the same draws are consumed whatever the options, for reproducibility).

    Returns:
        New contiguous arrays of the same shapes.
    """
    vflip, hflip = rng.random() < 0.5, rng.random() < 0.5
    k = int(rng.integers(0, 4))
    if not flips:
        vflip = hflip = False
    if not rot90:
        k = 0

    def apply(a: np.ndarray) -> np.ndarray:
        if vflip:
            a = a[..., ::-1, :]
        if hflip:
            a = a[..., :, ::-1]
        if k and a.shape[-1] == a.shape[-2]:
            a = np.rot90(a, k, axes=(-2, -1))
        return np.ascontiguousarray(a)

    return {m: apply(v) for m, v in pixel_values.items()}, None if labels is None else apply(labels)
