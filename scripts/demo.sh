#!/usr/bin/env bash
# Set up, fetch Fashion-MNIST, and run a small ACP-SL split-learning simulation (local runner).
set -euo pipefail
cd "$(dirname "$0")/.."
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
bash scripts/setup.sh
.venv/bin/acp-flower data fetch fashion-mnist --root data
.venv/bin/acp-flower -v run --set dataset=fashion-mnist --set data_dir=data --set codec=acp --set num_clients=5 \
  --set rounds=3 --set train_subset=6000 --set test_subset=2000 --set optimizer=adam --set lr=0.001 \
  --set "target_accuracies=[0.7, 0.8]" --out "$out"
cat "$out/metrics.csv"
