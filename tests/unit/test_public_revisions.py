"""Revision presets and source parsing for public checkpoint series (pure)."""

import pytest


def test_bad_input_names_the_field():
    from mech.public import PublicError, Source, parse_revisions, pythia_revisions

    full = pythia_revisions()
    assert full[:3] == ["step0", "step1", "step2"] and full[10] == "step512" and full[-1] == "step143000"
    assert len(full) == 154
    sub = parse_revisions("pythia:5")
    assert sub[0] == "step0" and sub[-1] == "step143000" and len(sub) == 5
    with pytest.raises(PublicError, match="revision 'main'"):
        parse_revisions("step0,main")
    with pytest.raises(PublicError, match="source 'http://x'"):
        Source("http://x")
    with pytest.raises(PublicError, match="no checkpoint at"):
        Source("local:/nonexistent").resolve("m", "step0")
