"""CPU training-step time of UNeXt-S and SC-UNeXt with CBAM at different skip levels, interleaved in one process.

    OMP_WAIT_POLICY=PASSIVE python scripts/train_step_speed.py [--threads 2] [--rounds 7]

Batch 8, 3x256x256, bce_dice, Adam; one step = forward + backward + optimizer. Prints the median step time and the
training images/s of each configuration as a ratio to UNeXt-S measured in the same run. Used to choose SC-UNeXt's
default ``cbam_levels`` (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scunext.losses import build_loss
from scunext.models import create_model

CONFIGS = {
    "unext_s": ("unext_s", {}),
    "sc_unext cbam_levels=(2,) [default]": ("sc_unext", {"cbam_levels": (2,)}),
    "sc_unext cbam_levels=(2, 3)": ("sc_unext", {"cbam_levels": (2, 3)}),
    "sc_unext cbam_levels=(1,)": ("sc_unext", {"cbam_levels": (1,)}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4, help="steps per round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {k: create_model(m, in_channels=3, **a).train() for k, (m, a) in CONFIGS.items()}
    optims = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}
    x, y = torch.randn(8, 3, 256, 256), (torch.rand(8, 1, 256, 256) > 0.5).float()
    loss_fn = build_loss("bce_dice")

    def step(k: str) -> None:
        optims[k].zero_grad()
        loss_fn(models[k](x), y).backward()
        optims[k].step()

    for k in models:  # warm-up
        step(k), step(k)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):  # interleaved, so drifts of the machine hit every configuration alike
        for k in models:
            t = time.perf_counter()
            for _ in range(args.steps):
                step(k)
            times[k].append((time.perf_counter() - t) / args.steps)
    base = statistics.median(times["unext_s"])
    print(f"torch {torch.__version__}, {args.threads} threads, batch 8, 3x256x256, {args.rounds} rounds x "
          f"{args.steps} steps, median step")  # fmt: skip
    for k, v in times.items():
        params = sum(p.numel() for p in models[k].parameters())
        med = statistics.median(v)
        print(f"{k:38s} {params:8,d} params  {1000 * med:7.1f} ms/step  training img/s vs unext_s {base / med:.3f}x")


if __name__ == "__main__":
    main()
