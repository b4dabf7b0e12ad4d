"""ViT-3D training throughput: samples/s at the paper size and the small size, and MFU on a GPU.

Runs full training steps (forward, backward, AdamW step) of the deep stage's network, built from the
real configs (``deep=vit3d`` and ``deep=vit3d_small``), on random inputs. FLOPs per sample come from
``torch.utils.flop_counter`` on one step; model FLOPs utilisation (MFU) = achieved FLOP/s divided by
the device's dense bf16 peak (GPU only; ``--peak-tflops`` overrides the table). Prints one line per
configuration and the ratio of each to the baseline (the small configuration in float32 eager mode)
measured in the same process.

    python benchmarks/vit_throughput.py                       # CPU: both sizes, float32
    python benchmarks/vit_throughput.py --batch-size 8 --steps 20 --json out.json   # GPU: adds bf16 + compile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cagerisk.cohort.schema import sequence_rois  # noqa: E402
from cagerisk.deep.model import build_deep_net  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s), by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def deep_config(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"deep={name}"]).deep


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, int]:
    cfg = OmegaConf.to_container(deep_config(name), resolve=True)
    net = build_deep_net(cfg, sequence_rois()).to(device)
    return net, int(cfg["backbone"]["img_size"])


def train_step(net, optimizer, image, index, label, bf16: bool) -> None:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = net(image, index)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), label)
    loss.backward()
    optimizer.step()


def flops_per_sample(name: str, device: torch.device, batch_size: int) -> float:
    net, size = build(name, device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    image, index, label = inputs(batch_size, size, device)
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(net, optimizer, image, index, label, bf16=False)
    return counter.get_total_flops() / batch_size


def inputs(batch_size: int, size: int, device: torch.device):
    image = torch.randn(batch_size, 1, size, size, size, device=device)
    index = torch.randint(0, len(sequence_rois()), (batch_size,), device=device)
    label = torch.randint(0, 2, (batch_size,), device=device).float()
    return image, index, label


def measure(name: str, device: torch.device, batch_size: int, steps: int, warmup: int, bf16: bool, compile: bool) -> dict:
    torch.manual_seed(0)
    net, size = build(name, device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    model = torch.compile(net) if compile else net
    image, index, label = inputs(batch_size, size, device)
    for _ in range(warmup):
        train_step(model, optimizer, image, index, label, bf16)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, image, index, label, bf16)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "config": name,
        "bf16": bf16,
        "compile": compile,
        "batch_size": batch_size,
        "input": size,
        "steps": steps,
        "seconds": seconds,
        "samples_per_s": steps * batch_size / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 1 at paper size on CPU, 8 on GPU")
    parser.add_argument("--small-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 2 paper-size on CPU, 20 on GPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (bf16 dense)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-paper", action="store_true", help="small size only (quick CPU check)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    paper_batch = args.batch_size or (8 if gpu else 1)
    paper_steps = args.steps or (20 if gpu else 2)
    small_steps = args.steps or (50 if gpu else 5)
    device_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops
    if peak is None and gpu:
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)

    runs = [("vit3d_small", args.small_batch_size, small_steps, False, False)]
    if not args.skip_paper:
        runs.append(("vit3d", paper_batch, paper_steps, False, False))
        if gpu:
            runs.append(("vit3d", paper_batch, paper_steps, True, False))
            runs.append(("vit3d", paper_batch, paper_steps, True, True))
    flops = {name: flops_per_sample(name, device, 1) for name in {r[0] for r in runs}}
    results = []
    for name, batch, steps, bf16, compile in runs:
        result = measure(name, device, batch, steps, warmup=2 if gpu else 1, bf16=bf16, compile=compile)
        result["train_gflops_per_sample"] = flops[name] / 1e9
        achieved = result["samples_per_s"] * flops[name]
        result["achieved_tflops"] = achieved / 1e12
        result["mfu"] = achieved / (peak * 1e12) if peak else None
        results.append(result)
    baseline = results[0]["samples_per_s"]
    print(f"device: {device_name}; peak bf16 {peak or 'n/a'} TFLOP/s; baseline = vit3d_small float32 eager")
    for r in results:
        r["ratio_to_baseline"] = r["samples_per_s"] / baseline
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"
        print(
            f"{r['config']:<12} input {r['input']:>3}^3 batch {r['batch_size']:>3} bf16={r['bf16']!s:<5} "
            f"compile={r['compile']!s:<5} {r['samples_per_s']:9.2f} samples/s  "
            f"{r['train_gflops_per_sample']:9.3f} GFLOP/sample  {r['achieved_tflops']:8.3f} TFLOP/s  MFU {mfu}  "
            f"ratio {r['ratio_to_baseline']:.4f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "peak_tflops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
