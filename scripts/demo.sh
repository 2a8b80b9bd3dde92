#!/usr/bin/env bash
# The main job end to end: get bin images, check and split them, train a counting model,
# evaluate it, calibrate the confirm/flag thresholds, reconcile an inventory whose records carry
# injected errors, say what that achieved, and serve the dashboard on it.
#   scripts/demo.sh synth   synthetic bins, offline (default)
#   scripts/demo.sh abid    about 2,000 real images of the 1-5 item subset from the public bucket
#   scripts/demo.sh DIR     a local dataset folder: ABID layout (bin-images/ + metadata/, e.g.
#                           ../shared/abid-sample; its splits/dev.txt and public_test.txt are
#                           used when present) or count folders (<count>/<id>.jpg: no records)
# Settings (environment): SERVE=0 stops before serving and prints the command that serves later;
# PORT (8000) the dashboard's port; MODEL=path/model.pt skips training and uses that model;
# EPOCHS (6), SYNTH_N (1200), ABID_N (2000), DEMO_DIR (data/demo), RUN_DIR (runs/demo).
set -euo pipefail
DATA=${1:-synth}
DEMO_DIR=${DEMO_DIR:-data/demo}
RUN_DIR=${RUN_DIR:-runs/demo}
EPOCHS=${EPOCHS:-6}
PORT=${PORT:-8000}
SPLIT_ARGS=()

case "$DATA" in
  synth)
    NAME=synth
    ROOT=$DEMO_DIR/synth
    PROTOCOL=challenge
    binventory data synth --n "${SYNTH_N:-1200}" --seed 0 --out "$ROOT"
    ;;
  abid)
    NAME=abid
    ROOT=$DEMO_DIR/abid
    PROTOCOL=udacity
    binventory data fetch --subset udacity --limit "${ABID_N:-2000}" --out "$ROOT"
    ;;
  *)
    if [ ! -d "$DATA" ]; then
      echo "DATA=$DATA is neither synth, abid nor a dataset folder" >&2; exit 2
    fi
    NAME=$(basename "$(realpath "$DATA")")
    ROOT=$DATA
    PROTOCOL=challenge
    if [ -f "$ROOT/splits/dev.txt" ] && [ -f "$ROOT/splits/public_test.txt" ]; then
      SPLIT_ARGS=(--list "train=$ROOT/splits/dev.txt" --list "test=$ROOT/splits/public_test.txt")
    fi
    ;;
esac

# The manifest lives in the demo folder, so a read-only dataset folder works too. The split
# prints the dataset's summary table; the index's own copy of it would say the same twice.
MANIFEST=$DEMO_DIR/$NAME/manifest.parquet
mkdir -p "$(dirname "$MANIFEST")"
binventory data index "$ROOT" --out "$MANIFEST" | tail -n 2
binventory data split "$MANIFEST" --protocol "$PROTOCOL" --seed 0 "${SPLIT_ARGS[@]}"

if [ -z "${MODEL:-}" ]; then
  RUN=$RUN_DIR/$NAME
  MODEL=$RUN/model.pt
  # A small model that trains in a few minutes on 2 CPU cores (on synthetic bins).
  binventory train --manifest "$MANIFEST" --output "$RUN" \
      --epochs "$EPOCHS" --image-size 128 --batch-size 32 --ema-decay 0.99 \
      --eval-protocols "$PROTOCOL" --cache-dir "$DEMO_DIR/cache"
  binventory evaluate --model "$MODEL" --manifest "$MANIFEST" \
      --split test --protocols "$PROTOCOL" --out "$RUN/eval-test"
fi

MODEL=$(realpath "$MODEL")
DB_FILE=$(realpath -m "$DEMO_DIR/inventory.db")
export BINVENTORY_DB_URL=sqlite:///$DB_FILE
rm -f "$DB_FILE" "$DB_FILE-wal" "$DB_FILE-shm"
SERVE_CMD=(binventory serve --model "$MODEL" --db "$BINVENTORY_DB_URL" --port "$PORT")
if [ -d "$ROOT/metadata" ]; then
  POLICY=$(realpath -m "$RUN_DIR/$NAME/policy.json")
  mkdir -p "$(dirname "$POLICY")"
  binventory inventory calibrate --model "$MODEL" --manifest "$MANIFEST" --split val --out "$POLICY"
  # A fresh inventory from the same records, where 20% of the bins' records are wrong (one SKU's
  # quantity moved by +-1..+-3): reconciling the test photos shows what the policy catches.
  binventory inventory import-abid "$ROOT" --inject-errors 0.2 --seed 0
  binventory reconcile --model "$MODEL" --policy "$POLICY" --input "$MANIFEST" --split test
  SERVE_CMD+=(--policy "$POLICY")
else
  POLICY="(none: count folders carry no records to calibrate on)"
  echo "$ROOT holds count folders: their photos carry no inventory record, so there is nothing"
  echo "to calibrate, import or reconcile; the dashboard shows the model and an empty inventory."
fi

TOKEN=$(binventory inventory token create demo)
echo
echo "Dataset:   $ROOT (manifest: $MANIFEST)"
echo "Model:     $MODEL"
echo "Report:    $(dirname "$MODEL")/eval-test/metrics.json"
echo "Policy:    $POLICY"
echo "Inventory: $BINVENTORY_DB_URL"
echo "Token:     $TOKEN   (signs in to the dashboard)"
if [ "${SERVE:-1}" != 1 ]; then
  echo
  echo "Serve the dashboard later (http://127.0.0.1:$PORT/, sign in with the token above):"
  echo "  ${SERVE_CMD[*]}"
fi
if [ -d "$ROOT/metadata" ]; then
  echo
  binventory inventory summary --truth "$MANIFEST"
fi

if [ "${SERVE:-1}" = 1 ]; then
  echo
  echo "Dashboard: http://127.0.0.1:$PORT/   (sign in with the token above; Ctrl-C stops the server)"
  exec "${SERVE_CMD[@]}"
fi
