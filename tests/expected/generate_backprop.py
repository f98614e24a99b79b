"""Writes tests/expected/backprop_*.csv: tiny synthetic runs of the default (backprop) exchange.

Run once at commit 28e1c2b (one torch thread: float reductions, and so the last bits of
the metrics, depend on the thread count), before the per-batch exchange became pluggable; the files are the
reference that tests/runtime/test_expected_metrics.py holds every later version to. Do not
regenerate them to make a test pass: a difference means the default exchange changed.

    python tests/expected/generate_backprop.py [OUT_DIR]

The last bits of float kernels differ between CPUs (and the tiny runs amplify them), so the
stored files hold on the machine they were written on; the test therefore also runs this
script on the code of commit 28e1c2b itself, on the machine at hand (``git archive``).
"""

TINY = dict(dataset="synthetic", train_subset=256, test_subset=128, num_clients=2, rounds=2, batch_size=32,
            eval_batch_size=128, optimizer="adam", lr=1e-3, augment=True)
CASES = {
    "vanilla_standard": dict(codec="standard"),
    "vanilla_acp": dict(codec="acp"),
    "vanilla_randtopk": dict(codec="randtopk"),
    "vanilla_quantize_channel": dict(codec="quantize", quantize_bits=6, quantize_granularity="channel"),
    "splitfed_v1_acp": dict(codec="acp", scheme="splitfed_v1"),
    "splitfed_v2_randtopk": dict(codec="randtopk", scheme="splitfed_v2", partition="dirichlet"),
    "vanilla_acp_sgd_bnrecal": dict(codec="acp", optimizer="sgd", momentum=0.9, lr=0.01, eval_bn_recalibration=64),
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    import torch

    import acp_flower
    from acp_flower.config import ExperimentConfig
    from acp_flower.runners.local import run_experiment

    torch.set_num_threads(1)
    print("acp_flower from", Path(acp_flower.__file__).resolve().parent)
    here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for name, changes in CASES.items():
        frame = run_experiment(ExperimentConfig.from_dict({**TINY, **changes}), None, progress=False)
        frame.drop(columns="wall_s").to_csv(here / f"backprop_{name}.csv", index=False, float_format="%.17g")
        print(name, frame["test_accuracy"].tolist())
