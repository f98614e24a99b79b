#!/usr/bin/env bash
# Set up, fetch Fashion-MNIST, and run a small ACP-SL split-learning simulation with Flower
# (`flwr run .` through `acp-flower simulate`: 5 SuperNodes, ray transport).
set -euo pipefail
cd "$(dirname "$0")/.."
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
bash scripts/setup.sh
.venv/bin/acp-flower data fetch fashion-mnist --root data
.venv/bin/acp-flower simulate \
  --run-config "dataset='fashion-mnist' data-dir='data' codec='acp' num-clients=5 rounds=3 train-subset=6000 \
test-subset=2000 optimizer='adam' lr=0.001 batch-size=128 target-accuracies='0.7,0.8' out-dir='$out'" \
  --federation-config "num-supernodes=5 client-resources-num-cpus=1"
cat "$out/metrics.csv"
