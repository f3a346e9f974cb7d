"""Check a whole dataset before anything is written: every image and mask readable, sizes matching, mask values
binary (or ``threshold_masks``), and the channel count the images call for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm  # (not tqdm.auto: its asyncio class calls iter() on a DataLoader at once)

from scunext.data.dataset import Pair
from scunext.data.errors import DataError
from scunext.data.io import read_image, read_mask

__all__ = ["DatasetCheck", "check_pairs"]

log = logging.getLogger(__name__)


@dataclass
class DatasetCheck:
    """What :func:`check_pairs` found: ``n`` pairs, of which ``gray`` grayscale and ``colour`` colour images, and
    ``empty`` masks without foreground."""

    n: int
    gray: int
    colour: int
    empty: int = 0

    @property
    def in_channels(self) -> int:
        """3 when any image is colour (grayscale ones are then replicated to 3 channels), else 1."""
        return 3 if self.colour else 1


def check_pairs(pairs: Sequence[Pair], threshold_masks: bool = False, show_progress: bool = False) -> DatasetCheck:
    """Read every image and mask of ``pairs`` once (full decode: a truncated file is found here, not at epoch 37).

    Raises:
        DataError: the first unreadable file, a mask of another size than its image, or a non-binary mask
            (without ``threshold_masks``); the message names the file. Also when *every* mask is empty: a model
            would learn to predict nothing (masks kept only in an alpha channel read as empty, for instance).
    """
    gray = colour = empty = 0
    for p in tqdm(pairs, desc="checking data", unit="img", disable=not show_progress, leave=False):
        image = read_image(p.image)
        mask = read_mask(p.mask, threshold=threshold_masks)
        if image.shape[:2] != mask.shape:
            (ih, iw), (mh, mw) = image.shape[:2], mask.shape
            raise DataError(f"{p.mask}: mask is {mw}x{mh} (WxH) but its image {p.image.name} is {iw}x{ih}")
        empty += not mask.any()
        if image.ndim == 2 or image.shape[2] == 1:
            gray += 1
        else:
            colour += 1
    if gray and colour:
        log.info("%d grayscale and %d colour images: the model takes 3 channels (grayscale replicated)", gray, colour)
    if pairs and empty == len(pairs):
        raise DataError(f"every one of the {len(pairs)} masks is empty (no foreground pixel), e.g. {pairs[0].mask}: "
                        "nothing to learn; are the masks stored in the alpha channel, or inverted?")  # fmt: skip
    return DatasetCheck(len(pairs), gray, colour, empty)
