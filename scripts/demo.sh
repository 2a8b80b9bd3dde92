#!/usr/bin/env bash
# The main job end to end: get bin images, index and check them, split them, summarize.
#   scripts/demo.sh synth   synthetic bins, offline (default)
#   scripts/demo.sh abid    about 2,000 real images of the 1-5 item subset from the public bucket
set -euo pipefail
DATA=${1:-synth}
DEMO_DIR=${DEMO_DIR:-data/demo}

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
echo
echo "Dataset ready: $ROOT (manifest: $ROOT/manifest.parquet)"
