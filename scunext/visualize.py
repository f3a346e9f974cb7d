"""Mask overlays and panels (PNG), written with Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["overlay", "boundary", "panel"]

PRED_COLOUR = np.array([255, 48, 48], dtype=np.float32)  # red: prediction
GT_COLOUR = np.array([40, 220, 80], dtype=np.uint8)  # green: ground-truth outline


def boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a boolean mask (pixels of the mask with a 4-neighbour outside it)."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1]
    eroded = inner & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return inner & ~eroded


def overlay(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 picture: ``image`` with the prediction tinted red (outlined) and the ground truth outlined green.

    Args:
        image: uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
        pred: bool ``(H, W)`` predicted mask.
        gt: optional bool ``(H, W)`` ground-truth mask.
        alpha: opacity of the prediction tint.
    """
    img = image if image.ndim == 2 else image[..., 0] if image.shape[2] == 1 else image
    out = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img.copy()
    p = pred.astype(bool)
    # only the predicted pixels change, so only they go through float32 (a full-size float copy costs 4x the image)
    tinted = (1 - alpha) * out[p].astype(np.float32) + alpha * PRED_COLOUR
    out[p] = tinted.clip(0, 255).astype(np.uint8)
    out[boundary(p)] = PRED_COLOUR.astype(np.uint8)
    if gt is not None:
        out[boundary(gt.astype(bool))] = GT_COLOUR
    return out


def panel(tiles: list[np.ndarray], captions: list[str], columns: int = 4, tile: int = 192) -> Image.Image:
    """A grid of RGB tiles (resized to ``tile`` px) with a caption above each."""
    rows = max(1, -(-len(tiles) // columns))
    cap_h = 16
    canvas = Image.new("RGB", (columns * tile, rows * (tile + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (t, c) in enumerate(zip(tiles, captions)):
        r, col = divmod(i, columns)
        x, y = col * tile, r * (tile + cap_h)
        canvas.paste(Image.fromarray(t).resize((tile, tile), Image.Resampling.BILINEAR), (x, y + cap_h))
        draw.text((x + 3, y + 2), c[:40], fill=(0, 0, 0))
    return canvas
