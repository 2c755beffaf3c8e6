"""One-command CUDA check: training step and prediction on the GPU, fp32 and bf16, beside the paper's Table VI.

Runs, on ``cuda``:

- `bench_train_step.py` for ViT-B MMLoRA and ViT-H MMAdapter, rows ``default`` (the model as a user builds it,
  fp32) and ``bf16-autocast`` (padding-free + bf16 autocast of the encoder, sdpa attention), at batch 1 (one
  256 x 256 chip of two modalities: the setting of Table VI) and at the paper's training batch (10; 4 for ViT-H);
- `bench_predict.py` (the streaming whole-scene prediction, its tiny model) on a 2048² and an 8192² scene,
  fp32 and bf16;

then prints step time, chips/s and peak GPU memory (`torch.cuda.max_memory_allocated`: tensors only; the
paper's figures, read off the card, also hold the CUDA context, some hundreds of MB) next to Table VI
(RTX 3090, 256 x 256: MMLoRA ViT-B 1,924 MB, ViT-L 4,158, ViT-H 6,520; MMAdapter 1,872 / 4,242 / 6,854).

    python benchmarks/gpu_check.py                        # everything (~5 min on a recent GPU)
    python benchmarks/gpu_check.py --quick                # batch 1 only, no ViT-H, 2048² prediction only
    python benchmarks/gpu_check.py --out /tmp/gpu         # where the JSON reports go

Exits 2 with a one-line message where no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TABLE_VI_MB = {
    ("vit-b", "mmlora"): 1924,
    ("vit-l", "mmlora"): 4158,
    ("vit-h", "mmlora"): 6520,
    ("vit-b", "mmadapter"): 1872,
    ("vit-l", "mmadapter"): 4242,
    ("vit-h", "mmadapter"): 6854,
}
PAPER_BATCH = {"vit-b": 10, "vit-l": 10, "vit-h": 4}


def train_runs(quick: bool) -> list[tuple[str, str, int]]:
    """(size, tuner, batch) of the training-step runs."""
    pairs = [("vit-b", "mmlora")] + ([] if quick else [("vit-h", "mmadapter")])
    batches = [1] if quick else [1, None]
    return [(size, tuner, batch or PAPER_BATCH[size]) for size, tuner in pairs for batch in batches]


def run_training(out: Path, quick: bool) -> list[dict[str, Any]]:
    sys.path.insert(0, str(HERE))
    import bench_train_step

    results = []
    for size, tuner, batch in train_runs(quick):
        path = out / f"train_{size}_{tuner}_b{batch}.json"
        argv = f"--device cuda --sizes {size} --tuners {tuner} --batch {batch} --attn sdpa --steps 5 --warmup 2"
        argv_list = [*argv.split(), "--variants", "default", "bf16-autocast", "--json", str(path)]
        bench_train_step.main(argv_list)
        results += json.loads(path.read_text())["results"]
    return results


def run_prediction(out: Path, quick: bool) -> list[dict[str, Any]]:
    sys.path.insert(0, str(HERE))
    import bench_predict

    rows = []
    for bf16 in ("off", "on"):
        path = out / f"predict_bf16_{bf16}.json"
        sizes = ["2048"] if quick else ["2048", "8192"]
        argv = ["--device", "cuda", "--bf16", bf16, "--batch-size", "32", "--sizes", *sizes, "--json", str(path)]
        bench_predict.main(argv)
        rows += [{**row, "bf16": bf16} for row in json.loads(path.read_text())["rows"]]
    return rows


def training_table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per (size, tuner, batch, variant), the Table VI column on batch-1 rows."""
    lines = [
        "| size | tuner | batch | variant | dtype | s/step | chips/s | inference s | peak GPU MiB | Table VI MB |",
        "|" + "---|" * 10,
    ]
    for r in results:
        head = f"| {r['size']} | {r['tuner']} | {r['batch']} | {r['variant']} "
        if "error" in r:
            lines.append(head + "| error: " + r["error"].strip().splitlines()[-1][:80] + " |" + " |" * 5)
            continue
        paper = TABLE_VI_MB.get((r["size"], r["tuner"])) if r["batch"] == 1 else None
        infer = f"{r['infer_s']:.3f}" if "infer_s" in r else "-"
        lines.append(
            head + f"| {r.get('step_dtype', '-')} | {r['train_s']:.3f} | {r['train_chips_per_s']:.1f} | {infer} "
            f"| {r['peak_memory_gib'] * 1024:.0f} | {paper or '-'} |"
        )
    return "\n".join(lines)


def prediction_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scene | bf16 | chips | seconds | MP/s | peak RSS MB |", "|" + "---|" * 6]
    for r in rows:
        lines.append(
            f"| {r['size']}² | {r['bf16']} | {r['chips']} | {r['seconds']:.1f} | {r['megapixels_per_second']:.2f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu")
    parser.add_argument("--quick", action="store_true", help="batch 1, ViT-B only, one prediction scene")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing was run")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0)
    total = torch.cuda.get_device_properties(0).total_memory / 2**20
    results = run_training(args.out, args.quick)
    rows = run_prediction(args.out, args.quick)
    report = "\n\n".join(
        [f"GPU: {name}, {total:.0f} MiB; torch {torch.__version__}", training_table(results), prediction_table(rows)]
    )
    (args.out / "gpu_check.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
