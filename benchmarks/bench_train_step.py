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
default attention, fp32, MMLoRA written straight from its formulas (`textbook_mmlora_forward`), no mfpeft
optimisation):

    default           the model exactly as a user builds it: MFNetConfig() defaults + get_peft_model
    meta-sam          the paper's setup on Meta's SAM ImageEncoderViT (meta_sam_baseline.py), fp32
    meta-sam-bf16     the same under bf16 autocast
    meta-sam-ftz      meta-sam with mfpeft's process settings (denormals flushed, freed memory kept in the heap:
                      mfpeft.common.prepare_process), as every mfpeft row (and command) runs
    stock             transformers SamVisionLayer, attention "sdpa" (the transformers default), fp32
    stock-eager       the same with attention "eager"
    padding-free      mfpeft.models.sam.fast_path padding-free window layers, fp32
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
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

VARIANTS: dict[str, dict[str, Any]] = {
    # What a user gets: MFNetConfig defaults + get_peft_model(model, MMLoraConfig()), nothing else.
    "default": {"default": True},
    # The paper's setup on Meta's segment_anything encoder (benchmarks/meta_sam_baseline.py), fp32 / bf16 autocast.
    "meta-sam": {"meta": True, "optimize": None},
    "meta-sam-bf16": {"meta": True, "optimize": None, "autocast": "bf16"},
    # The baseline with the process settings mfpeft's commands use (mfpeft.common.prepare_process).
    "meta-sam-ftz": {"meta": True, "optimize": None, "ftz": True},
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


def matmul_flops(dtype_name: str, device: str, size: int = 2048, repeats: int = 10) -> tuple[float, float]:
    """FLOP/s of a size x size `torch.matmul` in `dtype_name` ("fp32" or "bf16"): (from the median, from the best)."""
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
    return 2 * size**3 / statistics.median(times), 2 * size**3 / min(times)


# ---------------------------------------------------------------------------------------------------------------
# Worker: one configuration in a fresh process


def textbook_mmlora_forward(self: Any, x: Any, *args: object, **kwargs: object) -> Any:
    """MMLoRA written straight from the formulas, the straightforward path's tuner (no mfpeft optimisation).

    Each modality's full-width update ``B_m·A_m·x_m`` is built, mixed at full width (``mix_modalities``), and
    for ``qkv`` placed as ``cat(q, 0, v)``; the sum is out of place. mfpeft's `MMLoraLayer.forward` computes the
    same values without those full-width temporaries (tests/tuners assert both equal the formula).
    """
    import torch

    from mfpeft.tuners.base import mix_modalities, split_modalities

    result = self.base_layer(x, *args, **kwargs)
    for name in self._adapters_to_run():
        streams = split_modalities(x, self.num_modalities[name], self.module_name)
        a, b = self.mmlora_A[name], self.mmlora_B[name]
        if self.branches == 1:
            delta = torch.bmm(torch.bmm(streams, a.transpose(1, 2)), b.transpose(1, 2)) * self.scaling[name]
            if self.cross_modal[name]:
                delta = mix_modalities(delta, self.mmlora_lambda[name])
        else:
            q, v = (
                torch.bmm(torch.bmm(streams, a[:, j].transpose(1, 2)), b[:, j].transpose(1, 2)) * self.scaling[name]
                for j in (0, 1)
            )
            delta = torch.cat((q, torch.zeros_like(q), v), dim=-1)
        result = result + delta.reshape(result.shape).to(result.dtype)
    return result


def build_model(size: str, tuner: str, variant: str, default_attn: str, device: str) -> Any:
    import torch
    from peft import get_peft_model

    import mfpeft
    from mfpeft.models.sam.fast_path import optimize_sam_encoder

    spec = VARIANTS[variant]
    if spec.get("default") or spec.get("meta"):
        return build_reference_model(size, tuner, spec, device)
    vision = mfpeft.sam_vision_config(size, image_size=256)
    vision._attn_implementation = spec.get("attn", default_attn)
    torch.manual_seed(0)
    # The stock variants keep transformers' layers as they come (MFNet defaults to the padding-free ones).
    config = mfpeft.MFNetConfig(vision_config=vision, padding_free_encoder=spec["optimize"] is not None)
    model: Any = mfpeft.MFNetForSegmentation(config)
    with torch.no_grad():
        # SAM's default init (std ~1e-10 position tables, ...) is not what a pretrained encoder looks like; a
        # realistic scale does not change timings but keeps the softmax and layer norms in a normal regime.
        for name, param in model.vision_encoder.named_parameters():
            if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
                param.normal_(0, 0.02)
    config = mfpeft.MMLoraConfig() if tuner == "mmlora" else mfpeft.MMAdapterConfig()
    model = get_peft_model(model, config)
    if spec["optimize"] is None:
        from mfpeft.tuners.mmlora.layer import MMLoraLayer

        for module in model.modules():
            if isinstance(module, MMLoraLayer):
                module.forward = textbook_mmlora_forward.__get__(module)
    if spec["optimize"] is not None:
        optimize_sam_encoder(model, attention=cast(Any, default_attn), **spec["optimize"])
    return model.to(device)


def build_reference_model(size: str, tuner: str, spec: dict[str, Any], device: str) -> Any:
    """The ``default`` row (a user's construction) or the Meta-SAM baseline around the same head."""
    import torch
    from peft import get_peft_model

    import mfpeft

    sys.path.insert(0, str(Path(__file__).parent))
    from meta_sam_baseline import build_meta_baseline, realistic_position_tables

    torch.manual_seed(0)
    model: Any = mfpeft.MFNetForSegmentation(mfpeft.MFNetConfig(vision_config=mfpeft.sam_vision_config(size)))
    if spec.get("meta"):
        baseline = build_meta_baseline(size, tuner, model)
        if spec.get("autocast"):
            baseline.encoder.forward = autocast_forward(baseline.encoder.forward, device)
        return baseline.to(device)
    realistic_position_tables(model.vision_encoder)
    peft_config = mfpeft.MMLoraConfig() if tuner == "mmlora" else mfpeft.MMAdapterConfig()
    return get_peft_model(model, peft_config).to(device)


def autocast_forward(forward: Callable[..., Any], device: str) -> Callable[..., Any]:
    """``forward`` under bf16 autocast (the head stays float32: the baseline casts features back)."""
    import torch

    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            return forward(*args, **kwargs)

    return run


def synthetic_batch(batch: int, device: str) -> tuple[dict[str, Any], Any]:
    """Seeded random chips and labels.

    Returns ``({"optical": (batch, 3, 256, 256), "dsm": (batch, 1, 256, 256)}, labels (batch, 256, 256))``, the
    images uniform in [0, 1), the labels class ids 0..5.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    pixel_values = {
        "optical": torch.rand(batch, 3, 256, 256, generator=generator).to(device),
        "dsm": torch.rand(batch, 1, 256, 256, generator=generator).to(device),
    }
    labels = torch.randint(0, 6, (batch, 256, 256), generator=generator).to(device)
    return pixel_values, labels


def make_train_step(model: Any, pixel_values: dict[str, Any], labels: Any) -> Callable[[], float]:
    """One SGD step (lr 0.01, momentum 0.9, weight decay 5e-4) over the trainable parameters; returns the loss."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return train_step


def time_training(train_step: Callable[[], float], job: dict[str, Any]) -> tuple[list[float], list[float], float]:
    """Wall and CPU seconds of each training step after the warm-up, and the last step's loss."""
    device = job["device"]
    times, cpu_times = [], []
    loss = float("nan")
    for step in range(job["warmup"] + job["steps"]):
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = train_step()
        sync(device)
        if step >= job["warmup"]:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times, loss


def peak_memory(device: str) -> dict[str, Any]:
    """The process's peak memory so far: CUDA max allocated, or peak RSS (``ru_maxrss`` is KiB on Linux)."""
    import torch

    if device == "cuda":
        return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "memory_kind": "CUDA max allocated"}
    return {
        "peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30,
        "memory_kind": "peak RSS",
    }


def count_flops(run: Callable[[], object], no_grad: bool = False) -> int:
    """FLOPs of one call of `run` under `FlopCounterMode` (under `torch.no_grad()` too when `no_grad`)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if no_grad:
        with torch.no_grad(), counter:
            run()
    else:
        with counter:
            run()
    return int(counter.get_total_flops())


def measure_inference(model: Any, pixel_values: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """Wall and CPU seconds of each forward under `torch.inference_mode()` after the warm-up, and its FLOPs."""
    import torch

    device = job["device"]
    model.eval()
    infer, infer_cpu = [], []
    with torch.inference_mode():
        for step in range(job["warmup"] + job["steps"]):
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            model(pixel_values=pixel_values)
            sync(device)
            if step >= job["warmup"]:
                infer.append(time.perf_counter() - start)
                infer_cpu.append(time.process_time() - cpu_start)
    result: dict[str, Any] = {"infer_times_s": infer, "infer_cpu_times_s": infer_cpu}
    if job["flops"]:
        # no_grad, not inference_mode: torch 2.13's FlopCounterMode + autocast + einsum fails in inference_mode.
        result["infer_flops"] = count_flops(lambda: model(pixel_values=pixel_values), no_grad=True)
    return result


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    spec = VARIANTS[job["variant"]]
    if not spec.get("meta") or spec.get("ftz"):
        # What mfpeft's train / evaluate / predict do first (before torch's worker threads exist, which
        # inherit it); the Meta-SAM baseline runs as the paper's code does, unless the row says ftz.
        from mfpeft.common import prepare_process

        prepare_process()
    device = job["device"]
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    model = build_model(job["size"], job["tuner"], job["variant"], job["attn"], device)
    pixel_values, labels = synthetic_batch(job["batch"], device)
    train_step = make_train_step(model, pixel_values, labels)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    times, cpu_times, loss = time_training(train_step, job)
    result: dict[str, Any] = {key: job[key] for key in ("size", "tuner", "variant", "batch")}
    result["train_times_s"] = times
    result["train_cpu_times_s"] = cpu_times
    result["loss"] = loss
    # Read right after the training steps, before the FLOP count and inference add their own allocations.
    result.update(peak_memory(device))
    if job["flops"]:
        result["train_flops"] = count_flops(train_step)
    if job["inference"]:
        result.update(measure_inference(model, pixel_values, job))
    return result


# ---------------------------------------------------------------------------------------------------------------
# Parent: run every configuration, print, write JSON


def run_worker_process(script: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``script --worker JOB`` in a fresh process (its own peak RSS); its JSON result, or the job with its error."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        command = [sys.executable, script, "--worker", json.dumps(job), "--worker-out", out.name]
        env = {**os.environ, **job.get("env", {})}
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode:
            return {**job, "error": proc.stderr[-2000:]}
        return dict(json.loads(Path(out.name).read_text()))


def run_job(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    result = run_worker_process(__file__, job, timeout)
    if "error" in result:
        return {**{k: job[k] for k in ("size", "tuner", "variant", "batch")}, "error": result["error"]}
    return result


def step_dtype(variant: str) -> str:
    spec = VARIANTS[variant]
    optimize = spec.get("optimize") or {}
    bf16 = optimize.get("autocast_dtype") or optimize.get("frozen_dtype") or spec.get("autocast")
    return "bf16" if bf16 else "fp32"


def merge_rounds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per configuration: step times of every round pooled, the peak memory the largest."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in results:
        key = (r["size"], r["tuner"], r["variant"], r["batch"])
        if "error" in r or key not in merged or "error" in merged[key]:
            if key not in merged or "error" not in merged[key]:
                merged[key] = dict(r)
            continue
        m = merged[key]
        for field in ("train_times_s", "train_cpu_times_s", "infer_times_s", "infer_cpu_times_s"):
            if field in r:
                m[field] = m.get(field, []) + r[field]
        m["peak_memory_gib"] = max(m["peak_memory_gib"], r["peak_memory_gib"])
        m["rounds"] = m.get("rounds", 1) + 1
    return list(merged.values())


def summarise(results: list[dict[str, Any]], peaks: dict[str, dict[str, float]]) -> None:
    """Add medians, minima, chips/s, FLOP/s, utilisation and speed-ups (vs `stock`, same size/tuner/batch) in place.

    ``peaks[dtype]`` holds the matmul FLOP/s from the median ("median") and from the best ("best") matmul time;
    utilisation pairs the median step with the median matmul and the fastest step with the best matmul.
    """
    for r in results:
        if "error" in r:
            continue
        for phase in ("train", "infer"):
            if f"{phase}_times_s" in r:
                r[f"{phase}_s"] = statistics.median(r[f"{phase}_times_s"])
                r[f"{phase}_min_s"] = min(r[f"{phase}_times_s"])
                r[f"{phase}_cpu_s"] = statistics.median(r[f"{phase}_cpu_times_s"])
                r[f"{phase}_chips_per_s"] = r["batch"] / r[f"{phase}_s"]
    ok = [r for r in results if "error" not in r]
    # Speed-ups are against the paper's own code (the Meta-SAM baseline) when it ran, else against `stock`.
    stock = {(r["size"], r["tuner"], r["batch"]): r for r in ok if r["variant"] == "stock"}
    stock.update({(r["size"], r["tuner"], r["batch"]): r for r in ok if r["variant"] == "meta-sam"})
    useful = {
        (r["size"], r["tuner"], r["batch"]): r["train_flops"]
        for r in ok
        if r["variant"] == "padding-free" and "train_flops" in r
    }
    for r in ok:
        key = (r["size"], r["tuner"], r["batch"])
        dtype = step_dtype(r["variant"])
        r["step_dtype"] = dtype
        if "train_flops" in r:
            r["train_flop_per_s"] = r["train_flops"] / r["train_s"]
            r["utilisation"] = r["train_flop_per_s"] / peaks[dtype]["median"]
            r["utilisation_best"] = r["train_flops"] / r["train_min_s"] / peaks[dtype]["best"]
        if key in useful:
            # Work the model needs (the padding-free step's FLOPs), whatever this variant computes.
            r["useful_utilisation"] = useful[key] / r["train_s"] / peaks[dtype]["median"]
            r["useful_utilisation_best"] = useful[key] / r["train_min_s"] / peaks[dtype]["best"]
        if key in stock:
            base = stock[key]
            r["reference"] = base["variant"]
            if "peak_memory_gib" in r and "peak_memory_gib" in base:
                r["memory_vs_reference"] = r["peak_memory_gib"] / base["peak_memory_gib"]
            for phase in ("train", "infer"):
                if f"{phase}_s" in r and f"{phase}_s" in base:
                    r[f"{phase}_speedup"] = base[f"{phase}_s"] / r[f"{phase}_s"]
                    r[f"{phase}_speedup_min"] = base[f"{phase}_min_s"] / r[f"{phase}_min_s"]
                    r[f"{phase}_speedup_cpu"] = base[f"{phase}_cpu_s"] / r[f"{phase}_cpu_s"]


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    return format(value, spec) + suffix if isinstance(value, int | float) else "-"


def table(results: list[dict[str, Any]]) -> str:
    """Markdown tables: training step, then inference."""
    lines = [
        "| size | tuner | batch | variant | dtype | s/step median | min | CPU s | chips/s | speed-up median / min / CPU"
        " | GFLOP/step | util. median / best | useful util. median / best | peak GiB | memory vs ref. |",
        "|" + "---|" * 15,
    ]
    for r in results:
        head = f"| {r['size']} | {r['tuner']} | {r['batch']} | {r['variant']} "
        if "error" in r:
            lines.append(head + "| error |" + " |" * 10)
            continue
        lines.append(
            head + f"| {r['step_dtype']} | {_fmt(r['train_s'], '.2f')} | {_fmt(r['train_min_s'], '.2f')} "
            f"| {_fmt(r['train_cpu_s'], '.2f')} | {_fmt(r['train_chips_per_s'], '.3f')} "
            f"| {_fmt(r.get('train_speedup'), '.2f', 'x')} / {_fmt(r.get('train_speedup_min'), '.2f', 'x')} "
            f"/ {_fmt(r.get('train_speedup_cpu'), '.2f', 'x')} "
            f"| {_fmt(r['train_flops'] / 1e9 if 'train_flops' in r else None, '.0f')} "
            f"| {_fmt(100 * r['utilisation'] if 'utilisation' in r else None, '.0f', '%')} "
            f"/ {_fmt(100 * r['utilisation_best'] if 'utilisation_best' in r else None, '.0f', '%')} "
            f"| {_fmt(100 * r['useful_utilisation'] if 'useful_utilisation' in r else None, '.0f', '%')} "
            f"/ {_fmt(100 * r['useful_utilisation_best'] if 'useful_utilisation_best' in r else None, '.0f', '%')} "
            f"| {_fmt(r['peak_memory_gib'], '.2f')} | {_fmt(r.get('memory_vs_reference'), '.2f', 'x')} |"
        )
    infer = [r for r in results if "infer_s" in r]
    if infer:
        lines += [
            "",
            "| size | tuner | batch | variant | inference s median | min | CPU s | chips/s"
            " | speed-up median / min / CPU |",
            "|" + "---|" * 9,
        ]
        for r in infer:
            lines.append(
                f"| {r['size']} | {r['tuner']} | {r['batch']} | {r['variant']} | {_fmt(r['infer_s'], '.2f')} "
                f"| {_fmt(r['infer_min_s'], '.2f')} | {_fmt(r['infer_cpu_s'], '.2f')} "
                f"| {_fmt(r['infer_chips_per_s'], '.3f')} | {_fmt(r.get('infer_speedup'), '.2f', 'x')} "
                f"/ {_fmt(r.get('infer_speedup_min'), '.2f', 'x')} / {_fmt(r.get('infer_speedup_cpu'), '.2f', 'x')} |"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["vit-b"], choices=SIZES)
    parser.add_argument("--tuners", nargs="+", default=list(TUNERS), choices=TUNERS)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=2, help="chips per step (each chip has 2 modalities)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="repeat all configurations (interleaves machine load)")
    parser.add_argument("--attn", choices=("eager", "sdpa"), default="eager", help="attention of optimised variants")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in workers (0: torch default)")
    parser.add_argument(
        "--env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the worker processes, e.g. MALLOC_MMAP_THRESHOLD_=65536 (glibc returns freed blocks)",
    )
    parser.add_argument("--no-inference", dest="inference", action="store_false")
    parser.add_argument("--no-flops", dest="flops", action="store_false")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through `parser.error` on malformed ``--env`` items or out-of-range counts."""
    if any("=" not in item for item in args.env):
        parser.error(f"--env takes KEY=VALUE items, got {args.env}")
    if min(args.batch, args.steps, args.rounds) < 1 or args.warmup < 0:
        parser.error(f"--batch, --steps, --rounds must be >= 1 and --warmup >= 0, got {vars(args)}")


def make_job(
    args: argparse.Namespace, device: str, round_index: int, size: str, tuner: str, variant: str
) -> dict[str, Any]:
    """The worker's instructions for one configuration; FLOPs are counted in the first round only."""
    return {
        "size": size,
        "tuner": tuner,
        "variant": variant,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "attn": args.attn,
        "device": device,
        "threads": args.threads,
        "inference": args.inference,
        "flops": args.flops and round_index == 0,
        "env": dict(item.split("=", 1) for item in args.env),
    }


def measure_matmul(matmul: dict[str, list[tuple[float, float]]], device: str) -> None:
    """Append one (median, best) matmul FLOP/s measurement per dtype."""
    for d in matmul:
        matmul[d].append(matmul_flops(d, device))


def progress_line(result: dict[str, Any]) -> str:
    """The last line of a failed worker's stderr, or its median step time and peak memory."""
    times = result.get("train_times_s", [0.0])
    status = result.get("error", "").strip().splitlines()[-1:] or [
        f"{statistics.median(times):.2f} s/step, peak {result['peak_memory_gib']:.2f} GiB"
    ]
    return str(status[0])


def run_all(
    args: argparse.Namespace, device: str, matmul: dict[str, list[tuple[float, float]]]
) -> list[dict[str, Any]]:
    """Every round x size x tuner x variant in a worker, one record each, with a matmul measurement after each."""
    raw = []
    for round_index, size, tuner, variant in itertools.product(
        range(args.rounds), args.sizes, args.tuners, args.variants
    ):
        result = run_job(make_job(args, device, round_index, size, tuner, variant), args.timeout)
        raw.append(result)
        print(f"round {round_index} {size} {tuner} {variant}: {progress_line(result)}", file=sys.stderr, flush=True)
        # Between configurations: the matmul reference sees the same machine load as the steps.
        measure_matmul(matmul, device)
    return raw


def print_matmul(device: str, peaks: dict[str, dict[str, float]], measurements: int) -> None:
    print(
        f"matmul 2048^2 on {device}: fp32 {peaks['fp32']['median'] / 1e9:.0f} GFLOP/s "
        f"(best {peaks['fp32']['best'] / 1e9:.0f}), "
        f"bf16 {peaks['bf16']['median'] / 1e9:.0f} GFLOP/s (best {peaks['bf16']['best'] / 1e9:.0f}), "
        f"best of {measurements} measurements"
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(result))
        return 0
    check_args(parser, args)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    matmul: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
    measure_matmul(matmul, device)
    started = time.time()
    raw = run_all(args, device, matmul)
    # The machine's limit: the best of all matmul measurements (others share these cores; see docs/benchmarks.md).
    peaks = {d: {"median": max(m[0] for m in v), "best": max(m[1] for m in v)} for d, v in matmul.items()}
    results = merge_rounds(raw)
    summarise(results, peaks)
    report = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "matmul_flop_per_s": {"used": peaks, "measurements": matmul},
        "wall_s": time.time() - started,
        "args": {k: str(v) for k, v in vars(args).items() if not k.startswith("worker")},
        "results": results,
    }
    print_matmul(device, peaks, len(matmul["fp32"]))
    print(table(results))
    write_report(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
