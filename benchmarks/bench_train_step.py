"""Training-step and inference benchmark of MFNet against the machine's matmul limit.

For each SAM size x tuner x variant a fresh subprocess builds `MFNetForSegmentation` (random weights, 2
modalities optical + DSM, 6 classes, 256 x 256), wraps it with `peft.get_peft_model`, and times

- a training step: forward, cross-entropy loss, backward, SGD step (lr 0.01, momentum 0.9, weight decay 5e-4);
- inference: forward under `torch.inference_mode()`;

as the median over ``--steps`` steps after ``--warmup`` warm-up steps. The subprocess also reports its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss`` after the training steps, before anything else) or, on CUDA, the maximum
allocated memory, and the FLOPs of one training step from `torch.utils.flop_counter.FlopCounterMode`. The parent
measures fp32 and bf16 matmul FLOP/s (2048 x 2048 `torch.matmul`) before and after, and prints utilisation =
achieved FLOP/s / measured matmul FLOP/s of the step's dtype.

Variants (all in the same run; ``stock`` is the straightforward path: transformers' SAM layers as they come,
default attention, fp32, no mfpeft optimisation):

    stock             transformers SamVisionLayer, attention "sdpa" (the transformers default), fp32
    stock-eager       the same with attention "eager"
    padding-free      mfpeft.models.efficient_sam padding-free window layers, fp32
    bf16-autocast     padding-free + bf16 autocast of the encoder (frozen weights fp32)
    bf16-weights      padding-free + bf16 autocast + frozen weights stored in bf16
    checkpoint        padding-free + activation checkpointing of the frozen layers, fp32
    checkpoint-bf16   padding-free + checkpointing + bf16 frozen weights

Commands:

    python benchmarks/bench_train_step.py                               # ViT-B, MMLoRA + MMAdapter, batch 2
    python benchmarks/bench_train_step.py --sizes vit-l vit-h --tuners mmlora --steps 2
    python benchmarks/bench_train_step.py --sizes vit-h --tuners mmadapter --batch 10 \
        --variants checkpoint-bf16 --steps 1 --warmup 0 --no-inference --no-flops   # the 12 GiB check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

VARIANTS: dict[str, dict[str, Any]] = {
    "stock": {"attn": "sdpa", "optimize": None},
    "stock-eager": {"attn": "eager", "optimize": None},
    "padding-free": {"optimize": {"padding_free": True}},
    "bf16-autocast": {"optimize": {"padding_free": True, "autocast_dtype": "bf16"}},
    "bf16-weights": {"optimize": {"padding_free": True, "frozen_dtype": "bf16"}},
    "checkpoint": {"optimize": {"padding_free": True, "checkpoint_frozen": True}},
    "checkpoint-bf16": {"optimize": {"padding_free": True, "checkpoint_frozen": True, "frozen_dtype": "bf16"}},
}
DEFAULT_VARIANTS = ["stock", "stock-eager", "padding-free", "bf16-autocast", "bf16-weights", "checkpoint"]
SIZES = ("vit-b", "vit-l", "vit-h", "tiny")  # tiny: a smoke test of the script, not a SAM release
TUNERS = ("mmlora", "mmadapter")


# ---------------------------------------------------------------------------------------------------------------
# Measurements shared by parent and worker


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def matmul_flops(dtype_name: str, device: str, size: int = 2048, repeats: int = 10) -> float:
    """Median FLOP/s of a size x size `torch.matmul` in `dtype_name` ("fp32" or "bf16")."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):
        torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


# ---------------------------------------------------------------------------------------------------------------
# Worker: one configuration in a fresh process


def build_model(size: str, tuner: str, variant: str, default_attn: str, device: str) -> Any:
    import torch
    from peft import get_peft_model

    import mfpeft
    from mfpeft.models.efficient_sam import optimize_sam_encoder

    spec = VARIANTS[variant]
    vision = mfpeft.sam_vision_config(size, image_size=256)
    vision._attn_implementation = spec.get("attn", default_attn)
    torch.manual_seed(0)
    model: Any = mfpeft.MFNetForSegmentation(mfpeft.MFNetConfig(vision_config=vision))
    with torch.no_grad():
        # SAM's default init (std ~1e-10 position tables, ...) is not what a pretrained encoder looks like; a
        # realistic scale does not change timings but keeps the softmax and layer norms in a normal regime.
        for name, param in model.vision_encoder.named_parameters():
            if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
                param.normal_(0, 0.02)
    config = mfpeft.MMLoraConfig() if tuner == "mmlora" else mfpeft.MMAdapterConfig()
    model = get_peft_model(model, config)
    if spec["optimize"] is not None:
        optimize_sam_encoder(model, attention=cast(Any, default_attn), **spec["optimize"])
    return model.to(device)


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = job["device"]
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    model = build_model(job["size"], job["tuner"], job["variant"], job["attn"], device)
    batch = job["batch"]
    generator = torch.Generator().manual_seed(0)
    pixel_values = {
        "optical": torch.rand(batch, 3, 256, 256, generator=generator).to(device),
        "dsm": torch.rand(batch, 1, 256, 256, generator=generator).to(device),
    }
    labels = torch.randint(0, 6, (batch, 256, 256), generator=generator).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    times = []
    loss = float("nan")
    for step in range(job["warmup"] + job["steps"]):
        sync(device)
        start = time.perf_counter()
        loss = train_step()
        sync(device)
        if step >= job["warmup"]:
            times.append(time.perf_counter() - start)
    result: dict[str, Any] = {key: job[key] for key in ("size", "tuner", "variant", "batch")}
    result["train_s"] = statistics.median(times)
    result["train_times_s"] = times
    result["loss"] = loss
    if device == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["memory_kind"] = "CUDA max allocated"
    else:
        result["peak_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
        result["memory_kind"] = "peak RSS"
    if job["flops"]:
        counter = FlopCounterMode(display=False)
        with counter:
            train_step()
        result["train_flops"] = counter.get_total_flops()
    if job["inference"]:
        model.eval()
        infer = []
        with torch.inference_mode():
            for step in range(job["warmup"] + job["steps"]):
                sync(device)
                start = time.perf_counter()
                model(pixel_values=pixel_values)
                sync(device)
                if step >= job["warmup"]:
                    infer.append(time.perf_counter() - start)
        result["infer_s"] = statistics.median(infer)
        if job["flops"]:
            # no_grad, not inference_mode: torch 2.13's FlopCounterMode + autocast + einsum fails in inference_mode.
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                model(pixel_values=pixel_values)
            result["infer_flops"] = counter.get_total_flops()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Parent: run every configuration, print, write JSON


def run_job(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        command = [sys.executable, __file__, "--worker", json.dumps(job), "--worker-out", out.name]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            return {**{k: job[k] for k in ("size", "tuner", "variant", "batch")}, "error": proc.stderr[-2000:]}
        return dict(json.loads(Path(out.name).read_text()))


def step_dtype(variant: str) -> str:
    optimize = VARIANTS[variant]["optimize"] or {}
    return "bf16" if optimize.get("autocast_dtype") or optimize.get("frozen_dtype") else "fp32"


def summarise(results: list[dict[str, Any]], peaks: dict[str, float]) -> None:
    """Add chips/s, FLOP/s, utilisation and speed-ups (vs `stock` of the same size, tuner, batch) in place."""
    stock = {(r["size"], r["tuner"], r["batch"]): r for r in results if r["variant"] == "stock" and "error" not in r}
    useful = {
        (r["size"], r["tuner"], r["batch"]): r["train_flops"]
        for r in results
        if r["variant"] == "padding-free" and "train_flops" in r
    }
    for r in results:
        if "error" in r:
            continue
        key = (r["size"], r["tuner"], r["batch"])
        r["train_chips_per_s"] = r["batch"] / r["train_s"]
        if "infer_s" in r:
            r["infer_chips_per_s"] = r["batch"] / r["infer_s"]
        dtype = step_dtype(r["variant"])
        r["step_dtype"] = dtype
        if "train_flops" in r:
            r["train_flop_per_s"] = r["train_flops"] / r["train_s"]
            r["utilisation"] = r["train_flop_per_s"] / peaks[dtype]
        if key in useful:
            # Work the model needs (the padding-free step's FLOPs), whatever this variant computes.
            r["useful_utilisation"] = useful[key] / r["train_s"] / peaks[dtype]
        if key in stock:
            r["train_speedup"] = stock[key]["train_s"] / r["train_s"]
            if "infer_s" in r and "infer_s" in stock[key]:
                r["infer_speedup"] = stock[key]["infer_s"] / r["infer_s"]


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| size | tuner | batch | variant | train s/step | chips/s | speed-up | GFLOP/step | util. | useful util."
        " | peak GiB | infer s | infer chips/s | infer speed-up |"
    )
    lines = [head, "|" + "---|" * 14]

    def fmt(value: Any, spec: str) -> str:
        return format(value, spec) if isinstance(value, int | float) else "-"

    for r in results:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['tuner']} | {r['batch']} | {r['variant']} | error |" + " |" * 9)
            continue
        lines.append(
            f"| {r['size']} | {r['tuner']} | {r['batch']} | {r['variant']} | {fmt(r['train_s'], '.2f')} "
            f"| {fmt(r['train_chips_per_s'], '.2f')} | {fmt(r.get('train_speedup'), '.2f')}x "
            f"| {fmt(r.get('train_flops', 0) / 1e9 if 'train_flops' in r else None, '.0f')} "
            f"| {fmt(100 * r['utilisation'] if 'utilisation' in r else None, '.0f')}% "
            f"| {fmt(100 * r['useful_utilisation'] if 'useful_utilisation' in r else None, '.0f')}% "
            f"| {fmt(r['peak_memory_gib'], '.2f')} | {fmt(r.get('infer_s'), '.2f')} "
            f"| {fmt(r.get('infer_chips_per_s'), '.2f')} | {fmt(r.get('infer_speedup'), '.2f')}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["vit-b"], choices=SIZES)
    parser.add_argument("--tuners", nargs="+", default=list(TUNERS), choices=TUNERS)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=2, help="chips per step (each chip has 2 modalities)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--attn", choices=("eager", "sdpa"), default="eager", help="attention of optimised variants")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in workers (0: torch default)")
    parser.add_argument("--no-inference", dest="inference", action="store_false")
    parser.add_argument("--no-flops", dest="flops", action="store_false")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(result))
        return 0
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error(f"--batch {args.batch}, --steps {args.steps} must be >= 1 and --warmup {args.warmup} >= 0")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks_before = {d: matmul_flops(d, device) for d in ("fp32", "bf16")}
    started = time.time()
    results = []
    for size in args.sizes:
        for tuner in args.tuners:
            for variant in args.variants:
                job = {
                    "size": size, "tuner": tuner, "variant": variant, "batch": args.batch, "steps": args.steps,
                    "warmup": args.warmup, "attn": args.attn, "device": device, "threads": args.threads,
                    "inference": args.inference, "flops": args.flops,
                }  # fmt: skip
                result = run_job(job, args.timeout)
                results.append(result)
                status = result.get("error", "").strip().splitlines()[-1:] or [f"{result.get('train_s', 0):.2f} s"]
                print(f"{size} {tuner} {variant}: {status[0]}", file=sys.stderr, flush=True)
    peaks_after = {d: matmul_flops(d, device) for d in ("fp32", "bf16")}
    peaks = {d: max(peaks_before[d], peaks_after[d]) for d in peaks_before}
    summarise(results, peaks)
    report = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "matmul_flop_per_s": {"before": peaks_before, "after": peaks_after, "used": peaks},
        "wall_s": time.time() - started,
        "args": {k: str(v) for k, v in vars(args).items() if not k.startswith("worker")},
        "results": results,
    }
    print(
        f"matmul 2048^2 on {device}: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s "
        f"(before {peaks_before['fp32'] / 1e9:.0f}/{peaks_before['bf16'] / 1e9:.0f}, "
        f"after {peaks_after['fp32'] / 1e9:.0f}/{peaks_after['bf16'] / 1e9:.0f})"
    )
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
