"""The capture's writer (mech.capture_write): background writes publish what synchronous writes
do, a writer error reaches the caller, and the codecs store float16 exactly."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import zarr

from mech import names as N
from mech.capture_write import CODECS, DEFAULT_CODEC, BackgroundWriter, _Staging, codec_args
from mech.probes import encode_probes
from runner.data.corpora import world_tokenizer
from runner.world import vocab as V
from runner.world.rules import RULES

KINDS = ("resid_post", "pattern", "unembed")


@pytest.fixture(scope="module")
def probes():
    tok = world_tokenizer()
    items = RULES.get("pronoun_gender").battery(n_per_cell=3, n_neutral=1)
    return encode_probes(items, tok, tok.token_to_id(V.BOS), 64)


def _rows(probes, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    T = probes.tokens.shape[1]
    shapes = {"resid_post": (2, 16), "pattern": (2, 2, T), "unembed": (2,)}
    return [{k: (rng.standard_normal((probes.n, *s)) * 3).astype(np.float32) for k, s in shapes.items()}
            for _ in range(steps)]


def _stage(tmp_path, name: str, probes, n_steps: int, codec: str = DEFAULT_CODEC) -> _Staging:
    T = probes.tokens.shape[1]
    shapes = {"resid_post": (2, 16), "pattern": (2, 2, T), "unembed": (2,)}
    plan = {"family": probes.family, "steps": list(range(n_steps)), "kinds": list(KINDS)}
    st = _Staging(tmp_path / f".staging-{name}", plan, probes, shapes, "float16", 2**20, codec)
    st.set_axes(list(range(n_steps)), shapes, 2, 2, T)
    return st


def _read(path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return {n: a[:] for n, a in g.arrays()}


def test_background_writes_publish_the_same_arrays_as_synchronous_writes(tmp_path, probes):
    rows = _rows(probes, 3)
    sync_st, bg_st = _stage(tmp_path, "sync", probes, 3), _stage(tmp_path, "bg", probes, 3)
    for i, r in enumerate(rows):
        sync_st.write(i, r)
    w = BackgroundWriter(maxsize=1)
    for i, r in enumerate(rows):
        w.submit(bg_st.write, i, r)
    w.close()
    assert bg_st.n_complete == 3
    for st, name in ((sync_st, "sync"), (bg_st, "bg")):
        st.publish(tmp_path / "out.zarr", f"{name}/mech/{probes.family}", {"family": probes.family})
    a = _read(tmp_path / "out.zarr" / "sync" / "mech" / probes.family)
    b = _read(tmp_path / "out.zarr" / "bg" / "mech" / probes.family)
    assert sorted(a) == sorted(b) and N.hook_name("resid_post") in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    stored = b[N.hook_name("resid_post")]
    assert stored.dtype == np.float16 and stored.shape == (3, probes.n, 2, 16)
    np.testing.assert_array_equal(stored[1], rows[1]["resid_post"].astype(np.float16))


def test_a_writer_error_is_raised_in_the_caller_and_stops_later_rows(tmp_path, probes):
    rows = _rows(probes, 3)
    st = _stage(tmp_path, "bad", probes, 3)
    w = BackgroundWriter()

    def full(i, r):
        raise OSError(errno.ENOSPC, "No space left on device")

    w.submit(st.write, 0, rows[0])
    w.submit(full, 1, rows[1])
    w.submit(st.write, 2, rows[2])  # queued behind the failure: must not run
    with pytest.raises(OSError, match="No space left"):
        w.close()
    assert st.n_complete == 1  # row 2 was not counted complete past the missing row 1

    w2 = BackgroundWriter(maxsize=1)
    w2.submit(full, 0, rows[0])
    with pytest.raises(OSError, match="No space left"):  # queue of 1: by the 4th submit the job has failed
        for _ in range(3):
            w2.submit(lambda: None)
    w2.close(reraise=False)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_codecs_round_trip_float16_exactly(tmp_path, codec):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 64, 32)) * 10).astype(np.float16)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, -65504, 6e-8, 1e-5], np.float16)
    x.reshape(-1)[: special.size] = special
    a = zarr.open_group(str(tmp_path / "c.zarr"), mode="w").create_array(
        "x", shape=x.shape, chunks=(1, 64, 32), dtype="f2", **codec_args(codec))
    a[:] = x
    back = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["x"][:]
    assert back.dtype == np.float16
    np.testing.assert_array_equal(back.view(np.uint16), x.view(np.uint16))  # bit for bit, NaN and -0 included


def test_unknown_codec_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="codec: 'brotli' is not one of"):
        codec_args("brotli")
