#!/usr/bin/env bash
# Table 1 (lungs 3 random 80/20 splits; ISIC 2017 official split) and Table 2 (120 ISIC images, 5 folds) on one
# GPU, as shard processes sharing each experiment folder. Its one run (docs/results.md) used 24 processes and they
# time-sliced the GPU: ~4x slower per epoch than planned; use fewer shards per GPU. Every process stops at the deadline (SIGINT; finished runs stay finished,
# an interrupted run resumes on the next call), then the tables are written from the finished runs.
#
#   bash scripts/gpu_tables.sh DATA_ROOT OUT_DIR DEADLINE_SECONDS
#
# DATA_ROOT holds chest-xray-lungs/ and isic2017/ (as ../shared/data). Protocol: docs/results.md.
# Each finished run's portable record (no weights) goes to $OUT/records/EXPERIMENT as soon as it is scored: copy
# that folder back (e.g. into docs/results/) before the machine goes; --report-only --records rebuilds the tables.
set -u
DATA=$1 OUT=$2 DEADLINE=$3
DEVICE=${DEVICE:-cuda} LUNG_EPOCHS=${LUNG_EPOCHS:-50} ISIC_EPOCHS=${ISIC_EPOCHS:-40} T2_EPOCHS=${T2_EPOCHS:-100} LR=${LR:-1e-3} T2_IMAGES=${T2_IMAGES:-120}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT/logs"
T1L=(table1 --data "$DATA/chest-xray-lungs" --out "$OUT/table1-lungs" --epochs "$LUNG_EPOCHS" --lr "$LR"
     --seeds 3 --device "$DEVICE" --records "$OUT/records/table1-lungs")
T1I=(table1 --data "$DATA/isic2017" --split csv --out "$OUT/table1-isic2017" --epochs "$ISIC_EPOCHS" --lr "$LR"
     --device "$DEVICE" --records "$OUT/records/table1-isic2017")
T2=(table2 --data "$DATA/isic2017" --out "$OUT/table2" --epochs "$T2_EPOCHS" --lr "$LR" --folds 5 --images "$T2_IMAGES"
    --device "$DEVICE" --records "$OUT/records/table2")
run() {  # log-name nice args...
  local name=$1 nice=$2; shift 2
  timeout -k 20 -s INT "$DEADLINE" nice -n "$nice" python3 -m scunext experiment "$@" >"$OUT/logs/$name.log" 2>&1 &
}
for i in $(seq 1 12); do run "t1-lungs-$i" 0 "${T1L[@]}" --num-workers 1 --shard "$i/12"; done
for i in $(seq 1 4); do run "t1-isic-$i" 0 "${T1I[@]}" --num-workers 2 --shard "$i/4"; done
for i in $(seq 1 8); do run "t2-$i" 5 "${T2[@]}" --num-workers 0 --shard "$i/8"; done
wait
python3 -m scunext experiment "${T1L[@]}" --num-workers 1 --report-only >"$OUT/logs/t1-lungs.report" 2>&1
python3 -m scunext experiment "${T1I[@]}" --num-workers 2 --report-only >"$OUT/logs/t1-isic.report" 2>&1
python3 -m scunext experiment "${T2[@]}" --num-workers 0 --report-only >"$OUT/logs/t2.report" 2>&1
cat "$OUT"/logs/*.report
