"""zarr write throughput of ungrok's capture layout, per codec, vs raw ``numpy.save`` of the same arrays.

    python bench/zarr_write.py [--checkpoints 40] [--items 576] [--layers 6] [--d-model 512]

The array is what `ungrok mech capture` writes per checkpoint for one hook kind: float16
(item, layer, d_model) rows written one checkpoint at a time into a zarr v3 array of shape
(step, item, layer, d_model), created at its full step length and chunked one checkpoint per
chunk, as ``mech.capture_write._Staging`` lays it out and writes it (``WRITE_CONFIG``), with each codec of
``mech.capture_write.CODECS`` (``none``; ``lz4``: Blosc LZ4 + byte shuffle; ``zstd``: zarr's own
default). The baseline writes the same rows with ``numpy.save``, one uncompressed ``.npy`` file
per checkpoint, into the same temporary directory. Both include opening/creating files; neither
fsyncs; writers alternate, medians of the repeats. Prints MB/s of raw array bytes per codec and
for numpy, each codec's ratio to numpy, the bytes on disk, and which codec capture uses by default.
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


def _zarr_write(path: Path, rows: list[np.ndarray], codec: str) -> float:
    import zarr

    from mech.capture_write import WRITE_CONFIG, codec_args

    t = time.perf_counter()
    g = zarr.open_group(str(path), mode="w")
    shape = (len(rows), *rows[0].shape)
    a = g.create_array("resid_post", shape=shape, chunks=(1, *rows[0].shape), dtype="f2", fill_value=np.nan,
                       dimension_names=["step", "item", "layer", "d_model"], **codec_args(codec))
    for i, r in enumerate(rows):
        with zarr.config.set(WRITE_CONFIG):  # as mech.capture_write._Staging.write does
            zarr.open_array(a.store_path, mode="r+")[i] = r
    return time.perf_counter() - t


def measure(checkpoints: int = 40, items: int = 576, layers: int = 6, d_model: int = 512,
            seed: int = 0, repeats: int = 3) -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring)."""
    from mech.capture_write import CODECS, DEFAULT_CODEC

    rng = np.random.default_rng(seed)
    # activation-like values (not constant, so compression is not flattered)
    rows = [rng.standard_normal((items, layers, d_model)).astype(np.float16) for _ in range(checkpoints)]
    raw = sum(r.nbytes for r in rows)
    times: dict[str, list[float]] = {c: [] for c in [*CODECS, "npy"]}
    on_disk: dict[str, int] = {}
    for _ in range(repeats):  # alternate the writers; report medians
        with tempfile.TemporaryDirectory(prefix="ungrok-zarr-bench-") as tmp:
            tmp = Path(tmp)
            for codec in CODECS:
                times[codec].append(_zarr_write(tmp / f"{codec}.zarr", rows, codec))
                on_disk[codec] = _dir_bytes(tmp / f"{codec}.zarr")
            t = time.perf_counter()
            (tmp / "npy").mkdir()
            for i, r in enumerate(rows):
                np.save(tmp / "npy" / f"resid_post_{i:05d}.npy", r)
            times["npy"].append(time.perf_counter() - t)
            on_disk["npy"] = _dir_bytes(tmp / "npy")
    med = {k: statistics.median(v) for k, v in times.items()}
    cond = (f"{checkpoints} checkpoints x float16 ({items}, {layers}, {d_model}) = {raw / 1e6:.0f} MB, "
            f"one chunk per checkpoint; local disk, no fsync; median of {repeats}")
    out = []
    for codec in CODECS:
        chosen = " (capture's default)" if codec == DEFAULT_CODEC else ""
        out.append({"figure": f"zarr write, codec {codec}{chosen}, MB/s", "value": f"{raw / 1e6 / med[codec]:.0f}",
                    "conditions": f"{cond}; {on_disk[codec] / 1e6:.1f} MB on disk "
                                  f"({on_disk[codec] / on_disk['npy']:.2f} of npy)"})
    out.append({"figure": "numpy.save, one .npy per checkpoint, MB/s", "value": f"{raw / 1e6 / med['npy']:.0f}",
                "conditions": f"same arrays, same run; {on_disk['npy'] / 1e6:.1f} MB on disk"})
    out.append({"figure": "zarr capture write / numpy.save write throughput",
                "value": f"{med['npy'] / med[DEFAULT_CODEC]:.2f}",
                "conditions": f"capture's default codec {DEFAULT_CODEC}; same run; bytes on disk zarr / npy = "
                              f"{on_disk[DEFAULT_CODEC] / on_disk['npy']:.2f}; zstd (zarr's default): "
                              f"{med['npy'] / med['zstd']:.2f}, none: {med['npy'] / med['none']:.2f}"})
    return out


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
