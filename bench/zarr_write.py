"""zarr write throughput of ungrok's capture layout, per codec, vs raw ``numpy.save`` of the same arrays.

    python bench/zarr_write.py [--checkpoints 40] [--items 576] [--layers 6] [--d-model 512] [--repeats 5]

The array is what `ungrok mech capture` writes per checkpoint for one hook kind: float16
(item, layer, d_model) rows written one checkpoint at a time into a zarr v3 array of shape
(step, item, layer, d_model), created at its full step length and chunked one checkpoint per
chunk, as ``mech.capture_write._Staging`` lays it out and writes it (``WRITE_CONFIG``), with each codec of
``mech.capture_write.CODECS`` (``none``; ``lz4``: Blosc LZ4 + byte shuffle; ``zstd``: zarr's own
default). The baseline writes the same rows with ``numpy.save``, one uncompressed ``.npy`` file
per checkpoint. Both include opening/creating files; neither fsyncs. Prints MB/s of raw array
bytes per codec and for numpy (medians of the repeats), each codec's ratio to numpy, the bytes on
disk, and which codec capture uses by default.

Where the files go decides what is measured, so both are run when the machine has a memory-backed
``/dev/shm``:
- **local disk** (the system temp folder): what a capture meets, but without fsync a write only
  fills the page cache until the kernel's writeback throttles it, so a writer's MB/s depends on
  how many dirty pages the writers before it left (measured on one 2-core host: numpy.save 600 to
  3,000 MB/s in consecutive runs, the zarr/npy ratio 0.3 to 1.8). The writers' order rotates
  every repeat, and the ratio's range over the repeats is printed beside its median.
- **memory** (``/dev/shm``): no disk, no writeback: the ratio is the software cost of zarr's
  write path (selection, codec pipeline, its event-loop thread) against ``numpy.save``'s.
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


def _round(tmp: Path, rows: list[np.ndarray], order: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """One repeat: every writer once, in ``order``, into ``tmp``; seconds and bytes on disk."""
    secs, size = {}, {}
    for w in order:
        path = tmp / ("npy" if w == "npy" else f"{w}.zarr")
        if w == "npy":
            t = time.perf_counter()
            path.mkdir()
            for i, r in enumerate(rows):
                np.save(path / f"resid_post_{i:05d}.npy", r)
            secs[w] = time.perf_counter() - t
        else:
            secs[w] = _zarr_write(path, rows, w)
        size[w] = _dir_bytes(path)
    return secs, size


def measure(checkpoints: int = 40, items: int = 576, layers: int = 6, d_model: int = 512,
            seed: int = 0, repeats: int = 5, where: Path | None = None, label: str = "local disk") -> list[dict]:
    """Rows ``{figure, value, conditions}`` for the benchmark table (see the module docstring),
    the files written under ``where`` (default: the system temp folder), named ``label``."""
    from mech.capture_write import CODECS, DEFAULT_CODEC

    rng = np.random.default_rng(seed)
    # activation-like values (not constant, so compression is not flattered)
    rows = [rng.standard_normal((items, layers, d_model)).astype(np.float16) for _ in range(checkpoints)]
    raw = sum(r.nbytes for r in rows)
    writers = [*CODECS, "npy"]
    times: dict[str, list[float]] = {w: [] for w in writers}
    on_disk: dict[str, int] = {}
    for k in range(repeats):  # every repeat starts with the next writer
        order = writers[k % len(writers):] + writers[: k % len(writers)]
        with tempfile.TemporaryDirectory(prefix="ungrok-zarr-bench-", dir=where) as tmp:
            secs, on_disk = _round(Path(tmp), rows, order)
        for w in writers:
            times[w].append(secs[w])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [n / z for n, z in zip(times["npy"], times[DEFAULT_CODEC])]
    cond = (f"{checkpoints} checkpoints x float16 ({items}, {layers}, {d_model}) = {raw / 1e6:.0f} MB, "
            f"one chunk per checkpoint; {label}, no fsync; median of {repeats}, writers rotating")
    out = []
    for codec in CODECS:
        chosen = " (capture's default)" if codec == DEFAULT_CODEC else ""
        out.append({"figure": f"zarr write, codec {codec}{chosen}, MB/s, {label}",
                    "value": f"{raw / 1e6 / med[codec]:.0f}",
                    "conditions": f"{cond}; {on_disk[codec] / 1e6:.1f} MB on disk "
                                  f"({on_disk[codec] / on_disk['npy']:.2f} of npy)"})
    out.append({"figure": f"numpy.save, one .npy per checkpoint, MB/s, {label}",
                "value": f"{raw / 1e6 / med['npy']:.0f}",
                "conditions": f"same arrays, same run; {on_disk['npy'] / 1e6:.1f} MB on disk; "
                              f"{min(raw / 1e6 / t for t in times['npy']):.0f} to "
                              f"{max(raw / 1e6 / t for t in times['npy']):.0f} over the repeats"})
    out.append({"figure": f"zarr capture write / numpy.save write throughput, {label}",
                "value": f"{med['npy'] / med[DEFAULT_CODEC]:.2f}",
                "conditions": f"capture's default codec {DEFAULT_CODEC}; same run; {min(ratios):.2f} to "
                              f"{max(ratios):.2f} over the repeats; bytes on disk zarr / npy = "
                              f"{on_disk[DEFAULT_CODEC] / on_disk['npy']:.2f}; zstd (zarr's default): "
                              f"{med['npy'] / med['zstd']:.2f}"})
    return out


def measure_all(checkpoints: int = 40, items: int = 576, layers: int = 6, d_model: int = 512,
                repeats: int = 5) -> list[dict]:
    """:func:`measure` on the local disk, then in ``/dev/shm`` when it is a folder (memory)."""
    rows = measure(checkpoints, items, layers, d_model, repeats=repeats)
    shm = Path("/dev/shm")
    if shm.is_dir():
        rows += measure(checkpoints, items, layers, d_model, repeats=repeats, where=shm, label="memory (/dev/shm)")
    return rows


def _positive(v: str) -> int:
    if not v.isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"{v!r}: use a whole number >= 1")
    return int(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--checkpoints", type=_positive, default=40)
    ap.add_argument("--items", type=_positive, default=576)
    ap.add_argument("--layers", type=_positive, default=6)
    ap.add_argument("--d-model", type=_positive, default=512)
    ap.add_argument("--repeats", type=_positive, default=5)
    a = ap.parse_args(argv)
    from _table import print_rows

    print_rows(measure_all(a.checkpoints, a.items, a.layers, a.d_model, a.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
