"""Per-stage CPU cost of `scunext predict` on full-size images, and how far a reduced-size JPEG decode moves the mask.

Run from the repository root: ``OMP_WAIT_POLICY=PASSIVE python scripts/predict_stages.py``. Process CPU time per
call (1 PyTorch thread, as in predict's workers), so the figures do not depend much on other load on the machine.
The inputs are shipped samples upscaled as in ``scunext benchmark --end-to-end`` (scunext/deploy/stream_benchmark.py).
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from scunext.data import read_image, sample_dir
from scunext.deploy.predictor import Predictor
from scunext.deploy.stream_benchmark import generate_inputs
from scunext.visualize import boundary, overlay
from scunext.weights import weights_dir


def cpu_ms(fn, n: int = 5) -> float:
    fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e3


def png_bytes(pixels: np.ndarray, level: int) -> int:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=level)
    return len(buf.getvalue())


def stages(tmp: Path) -> None:
    lungs, isic = Predictor.from_run(weights_dir("lungs")), Predictor.from_run(weights_dir("isic2017"))
    png = generate_inputs("png", tmp / "png", 8)
    jpg = generate_inputs("jpeg", tmp / "jpg", 4, distinct=4)
    images = [read_image(f) for f in png]
    x = torch.stack([lungs.prepare(im) for im in images])
    logits = lungs.logits(x)
    mask = lungs.mask_from_logits(logits[0], (2048, 2048))
    mask8 = mask.view(np.uint8) * np.uint8(255)
    print(f"torch {torch.__version__}, 1 thread; CPU ms per call")
    print(f"2048x2048 PNG decode (read_image)           {cpu_ms(lambda: read_image(png[0])):7.1f}")
    print(f"prepare (to 1x256x256)                      {cpu_ms(lambda: lungs.prepare(images[0])):7.1f}")
    print(f"model, per image in a batch of 8 (torch)    {cpu_ms(lambda: lungs.logits(x), 3) / 8:7.1f}")
    print(f"mask 2048x2048 (bilinear logits, threshold) {cpu_ms(lambda: lungs.mask_from_logits(logits[0], (2048, 2048))):7.1f}")  # noqa: E501
    for level in (1, 6):
        ms = cpu_ms(lambda level=level: png_bytes(mask8, level))
        print(f"mask PNG encode, zlib level {level}               {ms:7.1f}  ({png_bytes(mask8, level) / 1e3:.0f} kB)")
    print(f"overlay 2048x2048                           {cpu_ms(lambda: overlay(images[0], mask), 3):7.1f}")
    ov = overlay(images[0], mask)
    print(f"overlay PNG encode, zlib level 1            {cpu_ms(lambda: png_bytes(ov, 1), 3):7.1f}")
    print(f"4000x3000 JPEG full decode                  {cpu_ms(lambda: read_image(jpg[0]), 3):7.1f}")
    for draft in (256, 512, 768):
        shape = read_image(jpg[0], draft_size=draft).shape
        ms = cpu_ms(lambda draft=draft: read_image(jpg[0], draft_size=draft))
        print(f"4000x3000 JPEG draft_size={draft:<4} -> {shape[1]}x{shape[0]:<5}  {ms:7.1f}")
    print(f"mask 4000x3000                              {cpu_ms(lambda: isic.mask_from_logits(logits[0], (3000, 4000)), 3):7.1f}")  # noqa: E501


def draft_accuracy(tmp: Path) -> None:
    """Masks from a full decode vs a draft decode of the first 4 ISIC samples upscaled to a 2000x1500 JPEG."""
    isic = Predictor.from_run(weights_dir("isic2017"))
    print("\n2000x1500 JPEG (quality 92): draft-decode mask vs full-decode mask")
    print(f"{'image':<18} {'draft':>5} {'changed px':>10} {'boundary px':>11} {'ratio':>6} {'max dist px':>11} "
          f"{'Dice':>8}")
    for f in sorted((sample_dir("isic2017") / "images").iterdir())[:4]:
        big = np.asarray(Image.fromarray(read_image(f)).resize((2000, 1500), Image.Resampling.BILINEAR))
        path = tmp / "big.jpg"
        Image.fromarray(big).save(path, quality=92)
        full = isic.mask_from_logits(isic.logits(isic.prepare(read_image(path))[None])[0], (1500, 2000))
        edge = boundary(full)
        dist = ndimage.distance_transform_edt(~edge)
        for factor in (1, 2):
            small = read_image(path, draft_size=factor * isic.size)
            draft = isic.mask_from_logits(isic.logits(isic.prepare(small)[None])[0], (1500, 2000))
            changed = full != draft
            dice = 2 * (full & draft).sum() / (full.sum() + draft.sum())
            print(f"{f.name:<18} {factor:>4}x {changed.sum():>10} {edge.sum():>11} {changed.sum() / edge.sum():>6.2f} "
                  f"{dist[changed].max() if changed.any() else 0:>11.1f} {dice:>8.5f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        stages(Path(d))
        draft_accuracy(Path(d))
