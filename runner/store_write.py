"""Appending one row to many zarr arrays in one go (what :meth:`runner.store.RunStore.append` does
at every scored checkpoint).

zarr 3's synchronous API sends every call (``resize``, ``__setitem__``, listing a group's arrays)
to its event-loop thread and waits for the answer: a checkpoint's row touches ~35 arrays (step,
loss, lr, two log-prob matrices and a dozen metric series per family), two calls each, and the
round trips, not the bytes, were most of the time (~80 waits, 0.1-0.2 s per checkpoint on a
shared 2-core machine). Here each array's resize-then-write is one coroutine of zarr's async API
(``Array.async_array``) and all of them are gathered in a single round trip; every array is still
resized before its row is written, and the caller advances its completion marker only after this
returns (or raises), so a reader sees the same rows, chunks and metadata as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zarr
from zarr.core.sync import sync


async def _grow_and_write(arr: zarr.Array, n: int, value: Any) -> None:
    a = arr.async_array
    await a.resize((n + 1, *a.shape[1:]))
    await a.setitem(n, value)


async def _all(rows: list[tuple[zarr.Array, Any]], n: int) -> None:
    await asyncio.gather(*(_grow_and_write(arr, n, value) for arr, value in rows))


def append_rows(rows: list[tuple[zarr.Array, Any]], n: int) -> None:
    """Resize every array of ``rows`` to ``n + 1`` rows along its first axis and write its value
    at row ``n``, concurrently, in one round trip to zarr's event loop. The first error raises
    (after every write has finished or failed)."""
    sync(_all(rows, n))
