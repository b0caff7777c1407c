"""Paper anchors next to the numbers of a synthetic run folder."""

from __future__ import annotations

import pandas as pd
import pytest

from mechvalue.report import anchors

try:
    from .test_report import make_synthetic_run
except ImportError:
    from test_report import make_synthetic_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_synthetic_run(tmp_path_factory.mktemp("run"))


def test_anchor_table_uses_our_numbers(run):
    table = anchors.anchor_table(run)
    assert len(table) == len(anchors.ANCHORS)
    ours = dict(zip(table["anchor"], table["ours"]))
    assert ours["share of value neurons"] == "0.30% at τ = 0.03"
    assert ours["circumplex Procrustes R²"] == "0.65"
    assert ours["variance of δ_s explained by δ̄"] == "55%"
    assert ours["PVQ gain: intrinsic / prompted / int⊥ / prompt⊥"].count("/") == 3
    assert "vs random +" in ours["scaling shifts value scores"] or "vs random -" in ours["scaling shifts value scores"]
    assert not any(str(v).startswith(("error", "not in")) for v in table["ours"])


def test_anchor_table_notes_missing_and_empty_tables(tmp_path):
    (tmp_path / "valuelocate").mkdir()
    (tmp_path / "valuelocate" / "layer_counts.csv").write_text("set,layer\n")  # header only
    table = anchors.anchor_table(tmp_path)
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["method", "anchor", "paper", "ours"]
    ours = dict(zip(table["anchor"], table["ours"]))
    assert ours["where they sit"] == "valuelocate/layer_counts.csv: no rows"
    assert ours["share of value neurons"] == "not in this run"
