#!/usr/bin/env bash
# The main job end to end: get bin images, check and split them, train a counting model,
# evaluate it and print where the report is.
#   scripts/demo.sh synth   synthetic bins, offline (default)
#   scripts/demo.sh abid    about 2,000 real images of the 1-5 item subset from the public bucket
set -euo pipefail
DATA=${1:-synth}
DEMO_DIR=${DEMO_DIR:-data/demo}
RUN_DIR=${RUN_DIR:-runs/demo}
EPOCHS=${EPOCHS:-6}

case "$DATA" in
  synth)
    ROOT=$DEMO_DIR/synth
    PROTOCOL=challenge
    binventory data synth --n "${SYNTH_N:-1200}" --seed 0 --out "$ROOT"
    ;;
  abid)
    ROOT=$DEMO_DIR/abid
    PROTOCOL=udacity
    binventory data fetch --subset udacity --limit "${ABID_N:-2000}" --out "$ROOT"
    ;;
  *)
    echo "unknown DATA=$DATA (use synth or abid)" >&2; exit 2 ;;
esac

binventory data index "$ROOT"
binventory data split "$ROOT/manifest.parquet" --protocol "$PROTOCOL" --seed 0

# A small model that trains in a few minutes on 2 CPU cores.
binventory train --manifest "$ROOT/manifest.parquet" --output "$RUN_DIR/$DATA" \
    --epochs "$EPOCHS" --image-size 128 --batch-size 32 --ema-decay 0.99 \
    --eval-protocols "$PROTOCOL" --cache-dir "$DEMO_DIR/cache"
binventory evaluate --model "$RUN_DIR/$DATA/model.pt" --manifest "$ROOT/manifest.parquet" \
    --split test --protocols "$PROTOCOL" --out "$RUN_DIR/$DATA/eval-test"

echo
echo "Dataset:  $ROOT (manifest: $ROOT/manifest.parquet)"
echo "Model:    $RUN_DIR/$DATA/model.pt"
echo "Report:   $RUN_DIR/$DATA/eval-test/metrics.json (confusion_$PROTOCOL.png, reliability_$PROTOCOL.png)"
