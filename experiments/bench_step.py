"""Benchmark: cost of the SL runtime's step over a bare PyTorch split step (same process).

Measures, interleaved so that machine noise hits every variant alike, the median time of
  (a) bare: head fwd, tail fwd/bwd, head bwd, two SGD steps on one batch;
  (b) the local runner's step (ClientRuntime.step -> bytes -> ServerRuntime.step -> bytes)
      with the `standard` codec and with `acp`;
  (c) the bare step with NCHW weights (the model is channels-last by default).
Data loading is excluded from all three (it is the same for every variant).
Targets: standard/bare <= 1.05, acp/standard <= 1.10; bare/bare_nchw is the channels-last
speed-up (< 1 is faster). Last line: `ratios: ...`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from acp_flower.codecs import build_codec
from acp_flower.config import ExperimentConfig
from acp_flower.models import split_resnet18
from acp_flower.runtime import ClientRuntime, ServerRuntime, make_optimizer


def bare_step(split, opt_head, opt_tail, x, y) -> None:
    smashed = split.head(x)
    cut = smashed.detach().requires_grad_()
    loss = F.cross_entropy(split.tail(cut), y)
    opt_tail.zero_grad(set_to_none=True)
    loss.backward()
    opt_head.zero_grad(set_to_none=True)
    smashed.backward(cut.grad)
    opt_tail.step()
    opt_head.step()


def runner_step(cfg: ExperimentConfig, device: torch.device):
    """A ClientRuntime wired directly to a ServerRuntime, as the local runner does."""
    split = split_resnet18(10, 3, cfg.cut_layer)
    client = ClientRuntime(cfg, 0, split.head, build_codec(cfg, total_steps=1000), dataset=[], num_classes=10,
                           device=device)
    server = ServerRuntime(split.tail, make_optimizer(cfg, split.tail.parameters()), device)
    return lambda x, y: client.step(x, y, server.step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="measured steps per variant")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, help="smoke convention: 5 steps per round")
    parser.add_argument("--clients", type=int, help="smoke convention (unused: one client)")
    args = parser.parse_args(argv)
    steps = 5 * args.rounds if args.rounds else args.steps
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    cfg = ExperimentConfig(dataset="cifar10", lr=1e-3, batch_size=args.batch_size)

    split = split_resnet18(10)
    split.head.to(device), split.tail.to(device)
    opt_h, opt_t = make_optimizer(cfg, split.head.parameters()), make_optimizer(cfg, split.tail.parameters())
    # The same bare step with the weights in NCHW (PyTorch's default; split_resnet18 makes them
    # channels-last): what the memory-format choice is worth on this machine.
    nchw = split_resnet18(10)
    nchw.head.to(device, memory_format=torch.contiguous_format)
    nchw.tail.to(device, memory_format=torch.contiguous_format)
    opt_hn, opt_tn = make_optimizer(cfg, nchw.head.parameters()), make_optimizer(cfg, nchw.tail.parameters())
    variants = {
        "bare": lambda: bare_step(split, opt_h, opt_t, x, y),
        "bare_nchw": lambda: bare_step(nchw, opt_hn, opt_tn, x, y),
        "standard": (lambda f: lambda: f(x, y))(runner_step(cfg.replace(codec="standard"), device)),
        "acp": (lambda f: lambda: f(x, y))(runner_step(cfg.replace(codec="acp"), device)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(steps + 3):  # 3 warm-up rounds
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        print(f"{name:>8}: median {m * 1e3:.1f} ms/step ({args.batch_size / m:.0f} samples/s) over {len(times[name])} steps")
    std_bare, acp_std = med["standard"] / med["bare"], med["acp"] / med["standard"]
    print(f"targets: standard/bare <= 1.05 ({'met' if std_bare <= 1.05 else 'MISSED'}), "
          f"acp/standard <= 1.10 ({'met' if acp_std <= 1.10 else 'MISSED'})")
    print(f"ratios: standard/bare={std_bare:.3f} acp/standard={acp_std:.3f} "
          f"bare/bare_nchw={med['bare'] / med['bare_nchw']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
