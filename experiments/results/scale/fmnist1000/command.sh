#!/usr/bin/env bash
# 1,000 SuperNodes on Fashion-MNIST (full training set, Dirichlet 0.5), 50 sampled per round (issue 15, item 3).
set -euo pipefail
cd "$(dirname "$0")/../../../.."
export OMP_NUM_THREADS=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
/usr/bin/time -v .venv/bin/acp-flower simulate \
  --run-config "dataset='fashion-mnist' data-dir='data' num-clients=1000 partition='dirichlet' dirichlet-alpha=0.5 clients-per-round=50 rounds=3 scheme='splitfed_v1' codec='acp' optimizer='adam' lr=0.001 batch-size=32 test-subset=2000 seed=0 out-dir='experiments/results/scale/fmnist1000/run'" \
  --federation-config "num-supernodes=1000 client-resources-num-cpus=1"
