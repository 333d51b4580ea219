"""docs/cli.md is generated from the CLI; this fails when it is out of date."""

from pathlib import Path


def test_cli_reference_is_up_to_date():
    from cluster.cli_docs import render

    doc = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert render() == doc.read_text(), "docs/cli.md is stale: run `python -m cluster.cli_docs > docs/cli.md`"
