#!/bin/bash
# Site calibration of the review flag at a new hospital (docs/robustness.md#site-calibration).
#
#   bash scripts/site_calibration.sh CROSS_SITE_EXP OUT [N_CAL]
#
# CROSS_SITE_EXP: a `scunext experiment cross-site` folder whose Shenzhen-trained seed-0 runs have their own
# quality.json (scunext calibrate RUN --shifts all). The 138 Montgomery X-rays are cut into N_CAL (default 20,
# an even pick over the sorted ids) labelled "local" images for `scunext calibrate --site` and the rest, on which
# the flag is scored clean and under wash-out, inversion and noise, once with the run's own threshold and once with
# the site's. Folders of symbolic links; nothing is copied.
set -euo pipefail
EXP=$1; OUT=$2; N=${3:-20}
DATA=${DATA:-../shared/data/chest-xray-lungs}
mkdir -p "$OUT"/{cal,rest}/{images,masks}
python - "$DATA" "$OUT" "$N" <<'PY'
import os, sys
from pathlib import Path
import numpy as np
data, out, n = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
ids = sorted(p.stem for p in (data / "images").iterdir() if p.stem.startswith("MCUCXR_"))
pick = set(np.linspace(0, len(ids) - 1, n).round().astype(int).tolist())
for k, i in enumerate(ids):
    part = "cal" if k in pick else "rest"
    for sub in ("images", "masks"):
        src = next((data / sub).glob(i + ".*"))
        dst = out / part / sub / src.name
        if not dst.exists():
            os.symlink(src, dst)
print(f"{len(pick)} calibration + {len(ids) - len(pick)} held Montgomery images")
PY
for r in sc-unext-train-chncxr-seed-0 unext-s-train-chncxr-seed-0; do
  R=$EXP/runs/$r
  scunext calibrate "$R" --site "$OUT/cal" --out "$OUT/$r-site.json" --overwrite --no-progress
  for q in own site; do
    Q=(); [ $q = site ] && Q=(--quality "$OUT/$r-site.json")
    scunext robustness "$R" --data "$OUT/rest" --subset all --shifts washout,invert,noise "${Q[@]}" \
      --out "$OUT/$r-$q" --overwrite --no-progress > /dev/null
  done
done
python scripts/robustness_tables.py $(for r in sc-unext-train-chncxr-seed-0 unext-s-train-chncxr-seed-0; do
  for q in own site; do echo "$r-$q=$OUT/$r-$q"; done; done) | sed -n '/^| report/,$p'
