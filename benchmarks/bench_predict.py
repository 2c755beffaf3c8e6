"""Whole-scene prediction: peak memory and throughput for scenes of growing size with the same model.

Each scene size is predicted in a fresh child process, whose peak resident memory (``ru_maxrss``) is read
when it ends, so the figures do not depend on what ran before. The model is a tiny random SAM (2 layers,
width 32) + MFNet head with 16 decoder channels: the point is the streaming machinery (reading, stitching,
writing), not the network, and it finishes in minutes on 2 CPU cores. Acceptance: the peak of the largest
scene is at most 1.3x that of the smallest. Scenes wider than ``--section-width`` (the library default, 4096)
are stitched in column sections; ``--section-width 0`` measures whole-width stitching.

    python benchmarks/bench_predict.py                       # 2048^2 and 8192^2, stride = chip, CPU
    python benchmarks/bench_predict.py --sizes 2048 4096 --stride 128 --json /tmp/bench_predict.json
    python benchmarks/bench_predict.py --device cuda --bf16 auto --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_scene(folder: Path, size: int, rows_per_strip: int = 512) -> dict[str, Path]:
    """A ``size`` x ``size`` optical (uint8, 3 bands) + DSM (float32) pair, written strip by strip."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"optical": folder / f"rgb_{size}.tif", "dsm": folder / f"dsm_{size}.tif"}
    if all(p.is_file() for p in paths.values()):
        return paths
    common = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "crs": "EPSG:32632",
        "transform": from_origin(500_000, 5_400_000, 0.5, 0.5),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    temps = {k: p.with_suffix(".tmp.tif") for k, p in paths.items()}
    rng = np.random.default_rng(size)
    with (
        rasterio.open(temps["optical"], "w", count=3, dtype="uint8", **common) as rgb,
        rasterio.open(temps["dsm"], "w", count=1, dtype="float32", **common) as dsm,
    ):
        xx = np.arange(size, dtype=np.float32)[None, :]
        for row in range(0, size, rows_per_strip):
            rows = min(rows_per_strip, size - row)
            yy = np.arange(row, row + rows, dtype=np.float32)[:, None]
            blocks = ((np.floor(xx / 97) + np.floor(yy / 89)) % 3).astype(np.float32)
            noise = rng.integers(0, 12, (3, rows, size), dtype=np.uint8)
            image = np.stack([60 + 50 * blocks, 90 + 30 * np.sin(xx / 40) + 0 * yy, 120 - 40 * blocks], 0)
            window = Window(0, row, size, rows)
            rgb.write((image + noise).astype(np.uint8), window=window)
            height = 30 + 8 * blocks + 3 * np.sin(yy / 55) * np.cos(xx / 61)
            dsm.write(height[None].astype(np.float32), window=window)
    for key, path in paths.items():
        os.replace(temps[key], path)
    return paths


def build_model(seed: int = 0) -> Any:
    """The benchmark's tiny random MFNet (2-layer SAM of width 32, 16 decoder channels), deterministic."""
    import torch
    from transformers import SamVisionConfig

    from mfpeft import MFNetConfig, MFNetForSegmentation

    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        global_attn_indexes=[1],
        output_channels=16,
        image_size=256,
        mlp_dim=64,
    )
    torch.manual_seed(seed)
    model = MFNetForSegmentation(MFNetConfig(vision_config=vision, decode_channels=16))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.vision_encoder.parameters():
            param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in the child: build the model, predict one scene, report time and peak memory."""
    import torch

    from mfpeft.engine.predict import PredictionOptions, predict_scene

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model = build_model()
    baseline = rss_mb()
    bf16: Any = spec["bf16"] if spec["bf16"] == "auto" else spec["bf16"] == "on"
    prefetch = {"auto": None, "on": True, "off": False}[spec.get("prefetch", "auto")]
    sections = {} if spec.get("section_width") is None else {"section_width": spec["section_width"]}
    options = PredictionOptions(
        stride=spec["stride"],
        batch_size=spec["batch_size"],
        device=spec["device"],
        bf16=bf16,
        prefetch=prefetch,
        **sections,
    )
    start = time.perf_counter()
    result = predict_scene(model, spec["rasters"], spec["output"], options)
    seconds = time.perf_counter() - start
    return {
        "size": spec["size"],
        "chips": result.chips,
        "seconds": seconds,
        "megapixels_per_second": result.height * result.width / 1e6 / seconds,
        "peak_rss_mb": rss_mb(),
        "rss_before_predict_mb": baseline,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--stride", type=int, default=256, help="256 = one chip per position (no overlap)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="off")
    parser.add_argument("--prefetch", choices=("auto", "on", "off"), default="auto", help="background reading")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: torch's default)")
    parser.add_argument("--section-width", type=int, help="columns stitched at a time (default: the library's)")
    parser.add_argument("--workdir", type=Path, help="where scenes are generated and kept (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=Path("bench_predict.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(worker(json.loads(args.worker))))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-predict-"))
    rows = []
    for size in args.sizes:
        started = time.perf_counter()
        rasters = write_scene(workdir, size)
        print(f"scene {size}^2 ready in {time.perf_counter() - started:.0f} s ({workdir})", flush=True)
        spec = {
            "size": size,
            "rasters": {k: str(v) for k, v in rasters.items()},
            "output": str(workdir / f"out_{size}.tif"),
            "stride": args.stride,
            "batch_size": args.batch_size,
            "device": args.device,
            "bf16": args.bf16,
            "threads": args.threads,
            "prefetch": args.prefetch,
            "section_width": args.section_width,
        }
        out = workdir / f"result_{size}.json"
        command = [sys.executable, __file__, "--worker", json.dumps(spec), "--worker-out", str(out)]
        subprocess.run(command, check=True)
        rows.append(json.loads(out.read_text()))
        print(json.dumps(rows[-1]), flush=True)

    print()
    print(f"{'scene':>12} {'chips':>6} {'seconds':>8} {'MP/s':>6} {'peak RSS MB':>12} {'before predict MB':>18}")
    for r in rows:
        print(
            f"{r['size']:>5} x {r['size']:<5} {r['chips']:>6} {r['seconds']:>8.1f} {r['megapixels_per_second']:>6.2f} "
            f"{r['peak_rss_mb']:>12.0f} {r['rss_before_predict_mb']:>18.0f}"
        )
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    ok = ratio <= 1.3
    verdict = "PASS" if ok else "FAIL"
    print(f"peak memory {rows[-1]['size']}^2 / {rows[0]['size']}^2 = {ratio:.2f} (acceptance <= 1.3: {verdict})")
    report = {
        "rows": rows,
        "peak_ratio": ratio,
        "pass": ok,
        "stride": args.stride,
        "batch_size": args.batch_size,
        "device": args.device,
        "bf16": args.bf16,
        "prefetch": args.prefetch,
        "section_width": args.section_width,
        "cpu_count": os.cpu_count(),
    }
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
