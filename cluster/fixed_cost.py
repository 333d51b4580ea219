"""What a fresh sweep worker spends before its first training step, phase by phase (for
``bench/grid_efficiency.py``, under either executor).

Runs inside the worker, in the order a cell pays them: the worker's own start (from the driver's
submit, by wall clock, when the submit time is given), the imports of torch / ungrok's trainer /
DeepSpeed, the first model build (which imports the model library), the process group, the
corpus (stream) load and the DeepSpeed engine. In a worker forked from the warm forkserver
(:mod:`cluster.preload`) the imports are already done and time at ~0; ``late_imports`` names the
top-level packages that the phases still imported (candidates for the server's preload).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def fixed_cost(cfg_json: str, corpora_dir: str, submitted: float | None = None) -> dict:
    """``{"phases": {name: seconds}, "forked": bool, "late_imports": [...], "server_imports": s}``
    for the cell ``cfg_json`` whose corpus is built under ``corpora_dir`` (``server_imports``: what
    the warm server's imports took, 0 if not forked from one); ``submitted`` is the driver's
    ``time.time()`` at submit (adds the phase "submit to worker start")."""
    out: dict[str, float] = {}
    if submitted is not None:
        out["submit to worker start"] = time.time() - submitted
    before = {m.partition(".")[0] for m in sys.modules}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        out[name], t = now - t, now

    import torch  # noqa: F401

    lap("import torch")
    from runner.config import RunConfig
    from runner.train import train_run  # noqa: F401
    from runner.train.loop import _load_corpora, build_engine

    lap("import ungrok trainer")
    import deepspeed  # noqa: F401

    lap("import deepspeed")
    from runner.model import build_model

    cfg = RunConfig.model_validate_json(cfg_json)
    build_model(cfg.model, 64, cfg.train.seed)
    lap("model build (incl. transformer_lens import)")
    from runner.train.dist import ensure_process_group

    ensure_process_group()
    lap("process group")
    corpus, _ = _load_corpora(cfg, Path(corpora_dir))
    lap("stream load")
    build_engine(cfg, build_model(cfg.model, corpus.tokenizer.get_vocab_size(), cfg.train.seed), 1)
    lap("engine init")
    from cluster.preload import REPORT

    late = sorted({m.partition(".")[0] for m in sys.modules} - before)
    return {"phases": out, "forked": bool(REPORT.get("warm")) and os.getppid() == REPORT.get("pid"),
            "late_imports": late, "server_imports": sum(REPORT.get("seconds", {}).values())}
