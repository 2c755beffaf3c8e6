"""Whole-scene prediction on 1 and 2 processes: throughput (megapixels per second) of the same scene.

Generates a 2048 x 2048 scene (``benchmarks/bench_predict.py``'s) and saves the tiny random MFNet of that
benchmark, then runs ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes N -m mfpeft.cli
predict`` for each N (``--cpu`` for 1), one thread per process (``OMP_NUM_THREADS=1``), and prints per run the
wall time of the command (start-up, model loading and writing included), the seconds the command itself
reports (from just before the model is loaded), the megapixels per second of both, the load average before
and after, and whether the rasters equal the first run's bit for bit.

    python benchmarks/bench_predict_processes.py                       # 1 and 2 processes, default stride
    python benchmarks/bench_predict_processes.py --processes 1 2 4 --stride 256 --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_predict import build_model, write_scene  # noqa: E402

_REPORTED = re.compile(r"wrote \S+ \((\d+) x (\d+), (\d+) chips, ([0-9.]+) s,")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run(processes: int, rasters: dict[str, Path], model: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``accelerate launch`` of ``mfpeft predict`` on ``processes`` CPU processes of one thread each."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # Plain `accelerate launch --cpu --num_processes 2` starts one process: several CPU processes need
    # --multi_gpu with ACCELERATE_USE_CPU=true (as for the training, docs/training.md).
    several = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    command = ["accelerate", "launch", *several, "--num_processes", str(processes), "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mfpeft.cli", "predict"]
    command += ["--model", str(model), "--optical", str(rasters["optical"]), "--dsm", str(rasters["dsm"])]
    command += ["--output", str(out / "labels.tif"), "--confidence", str(out / "confidence.tif")]
    command += ["--batch-size", str(args.batch_size), "--device", "cpu", "--bf16", "off"]
    command += ["--stride", str(args.stride)] if args.stride else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "true"}
    before = load_average()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    height, width, chips, seconds = _REPORTED.search(done.stdout).groups()  # type: ignore[union-attr]
    pixels = int(height) * int(width)
    return {
        "processes": processes,
        "chips": int(chips),
        "wall_seconds": wall,
        "reported_seconds": float(seconds),
        "wall_megapixels_per_second": pixels / 1e6 / wall,
        "megapixels_per_second": pixels / 1e6 / float(seconds),
        "load_average_before": before,
        "load_average_after": load_average(),
    }


def rasters_of(folder: Path) -> bytes:
    import rasterio

    data = b""
    for name in ("labels.tif", "confidence.tif"):
        with rasterio.open(folder / name) as src:
            data += src.read().tobytes()
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stride", type=int, help="default: the command's (half a chip)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workdir", type=Path, help="where the scene and outputs are kept (default: a temp dir)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from mfpeft.models.sam.loading import save_quietly

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-processes-"))
    rasters = write_scene(workdir, args.size)
    model = workdir / "model"
    if not model.is_dir():
        save_quietly(build_model(), model)
    print(f"scene {args.size}^2 and model in {workdir}; {os.cpu_count()} cores; load average {load_average()}")
    rows, first = [], None
    for processes in args.processes:
        row = run(processes, rasters, model, workdir / f"out_{processes}", args)
        content = rasters_of(workdir / f"out_{processes}")
        first = content if first is None else first
        row["bit_identical_to_first"] = content == first
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'processes':>9} {'chips':>6} {'wall s':>7} {'MP/s wall':>9} {'s':>6} {'MP/s':>6} {'load average':>20}")
    for r in rows:
        print(
            f"{r['processes']:>9} {r['chips']:>6} {r['wall_seconds']:>7.1f} {r['wall_megapixels_per_second']:>9.3f} "
            f"{r['reported_seconds']:>6.1f} {r['megapixels_per_second']:>6.3f} {r['load_average_after']:>20}"
        )
    for r in rows[1:]:
        speedup = r["megapixels_per_second"] / rows[0]["megapixels_per_second"]
        wall = r["wall_megapixels_per_second"] / rows[0]["wall_megapixels_per_second"]
        print(f"{r['processes']} processes: {speedup:.2f}x the throughput of {rows[0]['processes']} ({wall:.2f}x wall)")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "cpu_count": os.cpu_count(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
