"""Encoders beside SAM ViT-B: tuner weights, training-step time and peak RSS of MFNet on each family's base size.

Every family at its base size (random weights drawn by `mfpeft.models.encoders.random_encoder`; speed does not
depend on the values), two modalities (optical 3-band, DSM 1-band), batch 2, chips of 256 x 256 or the nearest size
the encoder takes (DINOv2's patch 14: 224), the library defaults (`MFNetConfig` + `get_peft_model(model,
MMLoraConfig())` / `MMAdapterConfig()`), one SGD step (forward, cross-entropy, backward, update) as in
`bench_train_step.py`. Each configuration runs in its own process (peak RSS per process, ``ru_maxrss``), in
interleaved rounds: round r runs every configuration once before round r + 1 starts, so machine load spreads over
all of them.

    python benchmarks/bench_encoders.py [--families sam dinov3 ...] [--steps 2] [--warmup 1] [--rounds 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import make_train_step, run_worker_process, time_training

BASE_SIZES = {
    "sam": "vit-b",
    "sam-hq": "vit-b",
    "sam2": "base-plus",
    "dinov2": "base",
    "dinov2-registers": "base",
    "dinov3": "base",
}


def chip_size(family: str) -> int:
    """256, or the nearest size the family takes (a multiple of its patch size and of 32)."""
    return 224 if family.startswith("dinov2") else 256


def worker(job: dict[str, Any]) -> dict[str, Any]:
    import resource

    import torch
    from peft import get_peft_model

    from mfpeft import MFNetConfig, MFNetForSegmentation, MMAdapterConfig, MMLoraConfig
    from mfpeft.common import prepare_process
    from mfpeft.models.encoders import random_encoder

    prepare_process()
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    family, size = job["family"], chip_size(job["family"])
    weights = random_encoder(f"random:{family}-{BASE_SIZES[family]}", image_size=size)
    model = MFNetForSegmentation._around_encoder(weights.state_dict, MFNetConfig(vision_config=weights.config))
    model = get_peft_model(model, MMLoraConfig() if job["tuner"] == "mmlora" else MMAdapterConfig())
    tuner = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "vision_encoder" in n)
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) - tuner
    generator = torch.Generator().manual_seed(0)
    pixel_values = {
        "optical": torch.rand(2, 3, size, size, generator=generator),
        "dsm": torch.rand(2, 1, size, size, generator=generator),
    }
    labels = torch.randint(0, 6, (2, size, size), generator=generator)
    model.train()
    times, _, loss = time_training(make_train_step(model, pixel_values, labels), {**job, "device": "cpu"})
    return {
        **job,
        "chip": size,
        "tuner_weights": tuner,
        "head_weights": head,
        "train_times_s": times,
        "loss": loss,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| family (size) | chip | tuner | tuner weights | head weights | s / step (median) | vs SAM ViT-B "
        "| peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        key = (r["family"], r["tuner"])
        entry = merged.setdefault(key, {**r, "train_times_s": [], "peak_rss_gib": 0.0})
        entry["train_times_s"] += r.get("train_times_s", [])
        entry["peak_rss_gib"] = max(entry["peak_rss_gib"], r.get("peak_rss_gib", 0.0))
    for (family, tuner), r in merged.items():
        if "error" in r:
            lines.append(f"| {family} | | {tuner} | error: {r['error'].splitlines()[-1][:80]} | | | | |")
            continue
        step = statistics.median(r["train_times_s"])
        sam = merged.get(("sam", tuner))
        ratio = step / statistics.median(sam["train_times_s"]) if sam and sam.get("train_times_s") else float("nan")
        lines.append(
            f"| {family} ({BASE_SIZES[family]}) | {r['chip']} | {tuner} | {r['tuner_weights']:,} | "
            f"{r['head_weights']:,} | {step:.2f} | {ratio:.2f}x | {r['peak_rss_gib']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(BASE_SIZES), choices=list(BASE_SIZES))
    parser.add_argument("--tuners", nargs="+", default=["mmlora", "mmadapter"], choices=["mmlora", "mmadapter"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/encoders.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(worker(json.loads(args.worker))))
        return
    load_before = os.getloadavg()
    results = []
    for _ in range(args.rounds):
        for family in args.families:
            for tuner in args.tuners:
                job = {"family": family, "tuner": tuner, "steps": args.steps, "warmup": args.warmup}
                job["threads"] = args.threads
                result = run_worker_process(__file__, job, timeout=1800)
                print(json.dumps({k: v for k, v in result.items() if k != "error"}), flush=True)
                results.append(result)
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"load_average": [load_before, load_after], "results": results}, indent=1))


if __name__ == "__main__":
    main()
