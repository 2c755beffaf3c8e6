"""Data loader benchmark: peak memory and random-chip throughput on a 20,000 x 20,000 GeoTIFF.

Writes an optical (3 x uint8) and a DSM (1 x float32) raster of SIZE x SIZE pixels, tiled (256 x 256) and
deflate-compressed, into a temporary folder (block by block, so writing stays small too), then, in a fresh
process so that the writing does not count, builds a RandomChipDataset over them (DSM min-max over the whole
tile, computed streaming) and reads random 256 x 256 chips through a DataLoader. Prints the figures, with
the CPU time per chip (a figure that other processes competing for the cores do not distort; the load
average is printed too).

    python benchmarks/bench_data.py                      # 20,000 x 20,000, 2 workers, 2,000 chips
    python benchmarks/bench_data.py --size 4000 --chips 500
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_rasters(folder: Path, size: int, block: int = 1024) -> tuple[Path, Path]:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    common = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "crs": "EPSG:32632",
        "transform": from_origin(500_000, 5_400_000, 0.1, 0.1),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "YES",
    }
    optical, dsm = folder / "big_rgb.tif", folder / "big_dsm.tif"
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)
    with (
        rasterio.open(optical, "w", count=3, dtype="uint8", **common) as o,
        rasterio.open(dsm, "w", count=1, dtype="float32", predictor=3, **common) as d,
    ):
        for row in range(0, size, block):
            h = min(block, size - row)
            y = np.arange(row, row + h, dtype=np.float32)[:, None]
            base = 60 * np.sin(x / 97.0)[None, :] * np.cos(y / 131.0) + 120
            noise = rng.integers(-12, 13, size=(3, h, size), dtype=np.int16)
            o.write(np.clip(base[None] + noise, 0, 255).astype(np.uint8), window=Window(0, row, size, h))
            heights = 30 + 10 * np.sin(x / 500.0)[None, :] + 5 * np.cos(y / 300.0)
            heights = heights + rng.normal(0, 0.2, size=(h, size)).astype(np.float32)
            d.write(heights.astype(np.float32)[None], window=Window(0, row, size, h))
    return optical, dsm


def _pss_mb(pid: int) -> float:
    """Proportional set size of a process (shared pages split between the processes sharing them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _hwm_mb() -> float:
    """Peak resident set of this process since exec (unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class _PssSampler(threading.Thread):
    """Samples the summed PSS of this process and its children every 250 ms; keeps the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            self.peak = max(self.peak, sum(_pss_mb(p) for p in [me, *_children(me)]))
            time.sleep(0.25)


def measure(optical: Path, dsm: Path, chips: int, workers: int, batch: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    from mfpeft.data.datasets import RandomChipDataset, collate_chips
    from mfpeft.data.tile import Tile

    torch.set_num_threads(1)
    baseline_mb = _hwm_mb()
    sampler = _PssSampler()
    sampler.start()
    tile = Tile("big", {"optical": optical, "dsm": dsm})
    t0 = time.perf_counter()
    dataset = RandomChipDataset([tile], chip_size=256, length=chips + 2 * batch * max(workers, 1), seed=0)
    stats_s = time.perf_counter() - t0
    results: dict[str, float] = {"statistics_s": stats_s}
    loader = DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_chips,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    it = iter(loader)
    for _ in range(max(workers, 1)):  # warm up: start the workers, open the rasters
        next(it)
    n, t0, cpu0 = 0, time.perf_counter(), _cpu_s(resource.RUSAGE_SELF)
    while n < chips:
        b = next(it)
        n += b["pixel_values"]["optical"].shape[0]
    elapsed = time.perf_counter() - t0
    cpu_main = _cpu_s(resource.RUSAGE_SELF) - cpu0
    assert b["pixel_values"]["optical"].shape[1:] == (3, 256, 256) and b["pixel_values"]["dsm"].shape[1:] == (
        1,
        256,
        256,
    )
    del it, loader
    sampler.stop.set()
    sampler.join()
    # Workers are reaped once the loader is gone; their CPU time includes warm-up and prefetched chips.
    cpu = cpu_main + _cpu_s(resource.RUSAGE_CHILDREN)
    results.update(
        cpu_s=cpu,
        chips_per_cpu_s=n / cpu,
        import_baseline_mb=baseline_mb,
        peak_pss_total_mb=sampler.peak,
        chips=n,
        seconds=elapsed,
        chips_per_s=n / elapsed,
        peak_rss_main_mb=_hwm_mb(),
        peak_rss_largest_worker_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--chips", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--dir", type=Path, help="reuse/keep the rasters in this folder instead of a temp dir")
    parser.add_argument("--measure", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        optical, dsm = args.measure
        print(json.dumps(measure(optical, dsm, args.chips, args.workers, args.batch)))
        return
    with tempfile.TemporaryDirectory(prefix="mfpeft-bench-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        optical, dsm = folder / "big_rgb.tif", folder / "big_dsm.tif"
        if not (optical.exists() and dsm.exists()):
            t0 = time.perf_counter()
            optical, dsm = write_rasters(folder, args.size)
            print(
                f"wrote {args.size} x {args.size} rasters in {time.perf_counter() - t0:.1f} s "
                f"(optical {optical.stat().st_size / 2**20:.0f} MiB, DSM {dsm.stat().st_size / 2**20:.0f} MiB, "
                f"tiled 256, deflate)"
            )
        print(f"load average before measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for workers in sorted({0, args.workers}):
            cmd = [
                sys.executable,
                __file__,
                "--measure",
                str(optical),
                str(dsm),
                "--chips",
                str(args.chips),
                "--workers",
                str(workers),
                "--batch",
                str(args.batch),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(
                f"workers={workers}: {r['chips_per_s']:.0f} chips/s (256 x 256, 3 + 1 bands; {r['chips']} chips "
                f"in {r['seconds']:.1f} s; {r['chips_per_cpu_s']:.0f} chips per CPU-second); DSM tile statistics "
                f"{r['statistics_s']:.1f} s; peak memory of all processes (PSS) {r['peak_pss_total_mb']:.0f} MiB; "
                f"peak RSS main {r['peak_rss_main_mb']:.0f} MiB (of which {r['import_baseline_mb']:.0f} MiB is "
                f"importing torch, rasterio and mfpeft), largest worker {r['peak_rss_largest_worker_mb']:.0f} MiB"
            )


if __name__ == "__main__":
    main()
