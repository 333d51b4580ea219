"""Every grid spec shipped under examples/ loads and expands: a spec whose cells fail validation
(e.g. a packed budget larger than its corpus) is caught here, not when someone runs it."""
import tomllib
from pathlib import Path

import pytest

from runner.grid import load_grid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRIDS = [p for p in sorted(EXAMPLES.rglob("*.toml")) if "axes" in tomllib.loads(p.read_text())]


def test_examples_hold_grid_specs():
    assert len(GRIDS) >= 10, [p.name for p in GRIDS]


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_grid_expands_to_distinct_runs(path):
    cells = load_grid(path).cells()
    assert cells, f"{path} expands to no cell"
    ids = [c.run_id for c in cells]
    assert len(set(ids)) == len(ids), f"{path}: two cells share a run id"
