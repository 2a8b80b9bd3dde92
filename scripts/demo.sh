#!/usr/bin/env bash
# The main job end to end: get bin images, check and split them, train a counting model,
# evaluate it, calibrate the confirm/flag thresholds, reconcile an inventory whose records carry
# injected errors, and serve the dashboard on it (SERVE=0 stops before serving).
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

MODEL=$RUN_DIR/$DATA/model.pt
POLICY=$RUN_DIR/$DATA/policy.json
binventory inventory calibrate --model "$MODEL" --manifest "$ROOT/manifest.parquet" --split val \
    --out "$POLICY"

# A fresh inventory from the same records, where 20% of the bins' records are wrong (one SKU's
# quantity moved by +-1..+-3): reconciling the test photos shows what the policy catches.
DB_FILE=$DEMO_DIR/inventory.db
export BINVENTORY_DB_URL=sqlite:///$DB_FILE
rm -f "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm"
binventory inventory import-abid "$ROOT" --inject-errors 0.2 --seed 0
binventory reconcile --model "$MODEL" --policy "$POLICY" --input "$ROOT/manifest.parquet" --split test

echo
echo "Dataset:   $ROOT (manifest: $ROOT/manifest.parquet)"
echo "Model:     $MODEL"
echo "Report:    $RUN_DIR/$DATA/eval-test/metrics.json (confusion_$PROTOCOL.png, reliability_$PROTOCOL.png)"
echo "Policy:    $POLICY"
echo "Inventory: $BINVENTORY_DB_URL"

if [ "${SERVE:-1}" = 1 ]; then
  TOKEN=$(binventory inventory token create demo)
  PORT=${PORT:-8000}
  echo
  echo "Dashboard: http://127.0.0.1:$PORT/   (log in with the token below; Ctrl-C stops the server)"
  echo "Token:     $TOKEN"
  exec binventory serve --model "$MODEL" --policy "$POLICY" --port "$PORT"
fi
