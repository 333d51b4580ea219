"""zarr write throughput of ungrok's capture layout vs raw ``numpy.save`` of the same arrays.

    python bench/zarr_write.py [--checkpoints 40] [--items 576] [--layers 6] [--d-model 512]

The array is what `ungrok mech capture` writes per checkpoint for one hook kind: float16
(item, layer, d_model) rows, appended one checkpoint at a time to a zarr v3 array of shape
(step, item, layer, d_model) chunked one checkpoint per chunk (zarr's default codec, zstd), the
way ``mech.capture`` grows its arrays (resize, then write the new row). The baseline writes the
same rows with ``numpy.save``, one uncompressed ``.npy`` file per checkpoint, into the same
temporary directory. Both include opening/creating files; neither fsyncs. Prints MB/s of raw
array bytes for both, the ratio zarr / numpy, and the bytes on disk of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(checkpoints: int = 40, items: int = 576, layers: int = 6, d_model: int = 512,
            seed: int = 0, repeats: int = 3) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    import zarr

    rng = np.random.default_rng(seed)
    # activation-like values (not constant, so compression is not flattered)
    rows = [rng.standard_normal((items, layers, d_model)).astype(np.float16) for _ in range(checkpoints)]
    raw = sum(r.nbytes for r in rows)
    t_zarr, t_npy = [], []
    for _ in range(repeats):  # alternate the two writers; report medians
        with tempfile.TemporaryDirectory(prefix="ungrok-zarr-bench-") as tmp:
            tmp = Path(tmp)
            t = time.perf_counter()
            g = zarr.open_group(str(tmp / "store.zarr"), mode="w")
            a = g.create_array("resid_post", shape=(0, items, layers, d_model), chunks=(1, items, layers, d_model),
                               dtype="f2", dimension_names=["step", "item", "layer", "d_model"])
            for i, r in enumerate(rows):
                a.resize((i + 1, items, layers, d_model))
                a[i] = r
            t_zarr.append(time.perf_counter() - t)
            t = time.perf_counter()
            (tmp / "npy").mkdir()
            for i, r in enumerate(rows):
                np.save(tmp / "npy" / f"resid_post_{i:05d}.npy", r)
            t_npy.append(time.perf_counter() - t)
            on_disk_zarr, on_disk_npy = _dir_bytes(tmp / "store.zarr"), _dir_bytes(tmp / "npy")
    t_zarr, t_npy = statistics.median(t_zarr), statistics.median(t_npy)
    cond = (f"{checkpoints} checkpoints x float16 ({items}, {layers}, {d_model}) = {raw / 1e6:.0f} MB, "
            f"one chunk per checkpoint, default codec; local disk, no fsync; median of {repeats}")
    return [
        {"figure": "zarr write (capture layout), MB/s", "value": f"{raw / 1e6 / t_zarr:.0f}", "conditions": cond},
        {"figure": "numpy.save, one .npy per checkpoint, MB/s", "value": f"{raw / 1e6 / t_npy:.0f}",
         "conditions": "same arrays, same run"},
        {"figure": "zarr / numpy.save write throughput", "value": f"{t_npy / t_zarr:.2f}",
         "conditions": f"same run; bytes on disk zarr / npy = {on_disk_zarr / on_disk_npy:.2f}"},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=int, default=40)
    ap.add_argument("--items", type=int, default=576)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=512)
    a = ap.parse_args(argv)
    from _table import print_rows

    print_rows(measure(a.checkpoints, a.items, a.layers, a.d_model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
