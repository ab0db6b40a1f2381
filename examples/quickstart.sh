#!/usr/bin/env bash
# Train a Matryoshka SAE on generated CLIP-like embeddings (no downloads).
set -euo pipefail
OUT=${1:-reports/quickstart}
mkdir -p "$OUT"
python3 -m audit.data.planted "$OUT/embeddings" 50000
msae-audit train --embeddings "$OUT/embeddings" --arch matryoshka --expansion 4 --k-min 16 \
  --epochs 5 --batch-size 1024 --lr 1e-3 --out "$OUT/sae" --overwrite
