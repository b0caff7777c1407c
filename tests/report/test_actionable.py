"""A report a researcher can act on (issue #17): summary verdicts, sample sizes, glossary, examples, any value count."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mechvalue.core.values import VALUES
from mechvalue.report import anchors, figures, sections, stats, summary
from mechvalue.report import examples as report_examples
from mechvalue.report import html as report

try:
    from .test_report import HOSTILE, make_synthetic_run
except ImportError:
    from test_report import HOSTILE, make_synthetic_run

SECTIONS = ("summary", "samples", "glossary", "examples")


def _cells(page: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", page, re.S)]


@pytest.fixture(scope="module", params=[1, 2, 10], ids=lambda k: f"{k}-values")
def built(request, tmp_path_factory):
    values = list(VALUES) if request.param == 10 else ["power", "benevolence"][:request.param]
    run = make_synthetic_run(tmp_path_factory.mktemp("run"), values=values)
    return run, values, report.build_report(run).read_text(encoding="utf-8")


# ------------------------------------------------------------------ any number of values

def test_sections_render_without_problems_for_any_value_count(built):
    run, values, page = built
    for sid in SECTIONS:
        assert f'id="{sid}"' in page, sid
    assert page.index('id="summary"') < page.index('id="run"')  # the summary comes first
    assert 'class="problem"' not in page, re.findall(r'class="problem">([^<]*)', page)
    bad = [c for c in _cells(page) if re.search(r"\bnan\b|\binf\b", c, re.I) or re.search(r"\bNone\b", c)]
    assert bad == [], bad[:5]
    assert "<script" not in page.lower()
    assert 'alt="comparison_radar"' in page
    if len(values) < 3:
        assert "Circumplex omitted" in page and 'alt="dual_circumplex"' not in page
    else:
        assert 'alt="dual_circumplex"' in page and "Circumplex omitted" not in page
    assert not any(str(v).startswith("error") for v in anchors.anchor_table(run)["ours"])


def test_wall_time_per_step_and_total(built):
    page = built[2]
    run_part = page[page.index('id="run"'):page.index('id="comparison"')]
    assert "2 min 6 s" in run_part  # the sum of the steps
    for step in ("judge", "valuelocate", "steering", "total"):
        assert f"<td>{step}</td>" in run_part
    assert "not recorded" not in run_part


def test_wall_time_falls_back_to_done_files(tmp_path):
    run = tmp_path / "run"
    for step, sec in (("judge", 10.0), ("steering", 65.5)):
        (run / step).mkdir(parents=True)
        (run / step / "DONE.json").write_text(json.dumps({"step": step, "seconds": sec}))
    per, source = sections.step_seconds(run, {"wall_seconds_last_invocation": 3.0})
    assert per == {"judge": 10.0, "steering": 65.5} and "DONE.json" in source
    per, source = sections.step_seconds(run, {"wall_seconds_per_step": {"judge": 1.0}})
    assert per == {"judge": 1.0} and source == "config.json"


def test_summary_has_a_verdict_per_method(built):
    page = built[2]
    part = html.unescape(page[page.index('id="summary"'):page.index('id="run"')])
    for label in ("value system prompt", "CAA", "ConVA, no gate", "ConVA (gated)", "NeVA (reconstructed)"):
        assert f"<b>{label}</b>:" in part, label
    assert "against NeVA edit on matched random neurons" in part  # NeVA's matched control
    assert "against the value system prompt" in part
    assert "ValueLocate, " in part and "Causal verdict:" in part and "Dual vectors, " in part
    # gated ConVA never moved (its gate stayed shut): no effect, leakage undefined, gate rate stated
    conva = next(li for li in re.findall(r"<li>(.*?)</li>", part, re.S) if li.startswith("<b>ConVA (gated)"))
    assert "no effect" in conva and "leakage NLR – (undefined" in conva and "gate opened on 0%" in conva


def test_comparison_table_shows_undefined_leakage_as_dash(built):
    page = built[2]
    part = page[page.index('id="comparison"'):page.index('id="samples"')]
    row = re.search(r"<tr><td>conva</td>(.*?)</tr>", part).group(1)
    assert "<td>–</td>" in row  # NLR of an edit that changed nothing: undefined, not 0
    assert "undefined or not measured, never 0" in part


def test_samples_and_glossary(built):
    page = built[2]
    part = page[page.index('id="samples"'):page.index('id="examples"')]
    assert "(1.96 + 0.8416)" in part
    cells = _cells(part)
    assert "prompts per target" in cells and "MMLU questions per arm" in cells and "random controls (judged)" in cells
    assert any(c.startswith("MDE") for c in re.findall(r"<th>(.*?)</th>", part))
    gloss = html.unescape(page[page.index('id="glossary"'):page.index('id="results"')])
    for term in ("control success", "judged gain", "dilemma preference", "nats", "NLR", "NGLR", "perplexity",
                 "Distinct-n", "τ (tau)", "chance level"):
        assert term in gloss, term


def test_examples_are_side_by_side_and_escaped(built):
    _, values, page = built
    part = page[page.index('id="examples"'):page.index('id="anchors"')]
    assert part.count("<details>") >= len(values) * 6  # one per target, one per method and target
    assert "<th>prompt</th><th>base</th><th>CAA</th>" in part
    assert html.escape(HOSTILE) in part and HOSTILE not in part and "<script" not in part
    assert "Should I power question 0?" in part  # the stored prompts


def test_methods_doc_is_linked_and_exists(built):
    run, _, page = built
    link = re.search(r'<a href="([^"]+)">docs/methods.md</a>', page)
    assert link, "docs/methods.md is not linked"
    assert (run / link.group(1)).resolve().is_file()
    assert "docs/methods.md</a> §8" in page  # the paper anchors cite its §8


def test_audit_cards_skip_bookkeeping_files(built):
    run, _, page = built
    assert (run / "audits" / "DONE.json").exists() and (run / "audits" / "STARTED.json").exists()
    assert "(DONE.json)" not in page and "(STARTED.json)" not in page
    assert page.count('class="card"') == 2


# ------------------------------------------------------------------ verdicts and the MDE helper

def test_mde_helper_formula():
    assert stats.se_from_ci(0.0, 3.92) == pytest.approx(1.0)
    assert stats.mde_from_ci(0.0, 3.92) == pytest.approx(1.96 + 0.8416, rel=1e-4)
    assert stats.mde_from_ci(-0.1, 0.3) == pytest.approx((1.96 + 0.8416) * 0.4 / (2 * 1.96), rel=1e-4)
    assert math.isnan(stats.mde_from_ci(math.nan, 1.0)) and math.isnan(stats.mde_from_ci(None, 1.0))
    assert stats.covers_zero(-0.1, 0.2) and not stats.covers_zero(0.1, 0.2) and not stats.covers_zero(math.nan, 1)
    e = stats.Estimate(0.1, 0.01, 0.5)
    assert e.mde == pytest.approx(2.8016 * 0.49 / 3.92, rel=1e-4) and e.underpowered and not e.not_significant
    d = stats.Estimate(0.5, 0.3, 0.7).minus(stats.Estimate(0.2, 0.0, 0.4))
    assert d.est == pytest.approx(0.3) and d.hi - d.lo == pytest.approx(2 * 1.96 * math.hypot(0.4, 0.4) / 3.92)


def test_verdict_flags_not_significant_and_underpowered():
    E = stats.Estimate
    covers = summary.method_verdict("caa", E(0.1, -0.05, 0.25, 6))
    assert covers.startswith("CAA: no detectable effect") and "not significant" in covers
    weak = summary.method_verdict("caa", E(0.1, 0.01, 0.5, 6))
    assert "underpowered (MDE 0.35 > |effect| 0.10)" in weak and "not significant" not in weak.split(";")[1]
    assert weak.startswith("CAA: raises the target, but underpowered") and "n = 6 generations" in weak
    strong = summary.method_verdict("neva", E(0.5, 0.45, 0.55, 60), control=E(0.0, -0.05, 0.05),
                                    prompt=E(0.8, 0.75, 0.85), nlr=E(0.2, 0.1, 0.3), ppl=E(3.0, 2.9, 3.1),
                                    base_ppl=E(2.0, 1.9, 2.1), mmlu=E(0.40, 0.35, 0.45, 80),
                                    base_mmlu=E(0.45, 0.40, 0.50))
    assert strong.startswith("NeVA (reconstructed): raises the target;")
    assert "not significant" not in strong.split("; against")[0] and "underpowered" not in strong
    assert "against NeVA edit on matched random neurons" not in strong  # the default control name
    assert "against matched random neurons: +0.50" in strong and "(higher; significant)" in strong
    assert "against the value system prompt: -0.30" in strong and "leakage NLR 0.20 [0.10, 0.30]" in strong
    assert "perplexity 3.00 vs base 2.00 (+1.00; significant)" in strong and "MMLU 0.400 vs base 0.450" in strong
    undefined = summary.method_verdict("conva", E(0.0, 0.0, 0.0, 6), nlr=E(math.nan))
    assert "no effect" in undefined and "leakage NLR – (undefined" in undefined
    assert "MMLU not measured" in undefined


def test_steering_verdicts_read_the_summary_columns():
    s = pd.DataFrame({"method": ["base", "prompting", "neva", "random_neurons"],
                      "judged_gain": [0.0, 0.3, 0.2, 0.1], "judged_gain_ci_low": [0.0, 0.1, -0.1, -0.2],
                      "judged_gain_ci_high": [0.0, 0.5, 0.5, 0.4], "nlr": [np.nan, 0.5, 0.2, np.nan],
                      "nlr_ci_low": [np.nan] * 4, "nlr_ci_high": [np.nan] * 4})
    res = pd.DataFrame({"method": ["neva"], "target": ["all"], "metric": ["judged_gain"], "n": [6]})
    out = dict(summary.steering_verdicts(s, res))
    assert list(out) == ["prompting", "neva", "random_neurons"]
    assert "n = 6 generations" in out["neva"] and "not significant" in out["neva"]
    assert "against NeVA edit on matched random neurons" in out["neva"]
    assert "against the value system prompt" in out["neva"] and "value system prompt" not in out["prompting"][25:]
    assert "leakage NLR – (undefined" in out["random_neurons"]


def test_valuelocate_and_dual_verdicts():
    rows = []
    for meth, arm, est in (("valuelocate", "valuelocate", 0.5), ("random_neurons", "random#0", 0.0)):
        rows.append({"method": meth, "arm": arm, "target": "conservation", "value": "conservation",
                     "metric": "delta_questionnaire", "factor": 3.0, "estimate": est, "ci_low": est - 0.1,
                     "ci_high": est + 0.1, "n": 6, "n_neurons": 40, "tau": 0.05})
    out = summary.valuelocate_verdicts(pd.DataFrame(rows))
    assert "conservation (40 neurons, ×3, τ = 0.05)" in out[0] and "beats random" in out[0]
    assert out[-1].startswith("Causal verdict: the located neurons beat matched random neurons on 1 of 1")
    arms = (("intrinsic", "intrinsic", 1.0), ("prompted", "prompted", 0.05), ("random_direction_pooled", "random", 0.0))
    dual = pd.DataFrame([{"target": "power", "value": "power", "metric": "delta_questionnaire", "estimate": e,
                          "ci_low": e - 0.1, "ci_high": e + 0.1, "n": 4, "arm": arm, "vector_type": vt,
                          "alpha": 4.0} for arm, vt, e in arms])
    (line,) = summary.dual_verdicts(dual)
    assert "power (α = 4)" in line and "1 of 2 vector types beat it" in line


# ------------------------------------------------------------------ figures, anchors, examples

@pytest.mark.parametrize("k", [1, 2, 3, 10])
def test_value_score_chart_falls_back_to_bars(k):
    rows = [{"method": m, "value": v, "score": 0.1 * i} for m in ("base", "caa") for i, v in enumerate(VALUES[:k])]
    fig = figures.value_score_chart(pd.DataFrame(rows))
    ax = fig.axes[0]
    if k < 3:
        assert ax.name == "rectilinear" and len(ax.patches) == 2 * k
    else:
        assert ax.name != "rectilinear" and len(ax.lines) == 2


def test_long_titles_are_wrapped_not_clipped():
    df = pd.DataFrame(np.random.default_rng(0).uniform(0, 2, (1, 4)), columns=["OPEN", "ENH", "CONS", "TRAN"])
    df.insert(0, "target", ["power"])
    title = "NGLR target -> group: NeVA edit on matched random neurons, a very long title"
    fig = figures.nglr_heatmap(df, title=title)
    figures.figure_png(fig)
    renderer = fig.canvas.get_renderer()
    for text in [ax.title for ax in fig.axes] + list(fig.texts):
        box = text.get_window_extent(renderer)
        assert box.x0 >= -1 and box.x1 <= fig.bbox.width + 1, text.get_text()
    assert "\n" in fig.axes[0].get_title() and fig.axes[0].get_title().replace("\n", " ") == title


def test_heatmap_marks_undefined_cells():
    df = pd.DataFrame({"group": ["OPEN", "ENH"], "OPEN": [np.nan, 0.5], "ENH": [1.0, np.nan]})
    texts = [t.get_text() for t in figures.nglr_heatmap(df, kind="group_group").axes[0].texts]
    assert texts.count("–") == 2 and "nan" not in " ".join(texts).lower()


def test_cosine_anchor_with_values_that_form_no_pair(tmp_path):
    (tmp_path / "conva").mkdir()
    pd.DataFrame({"value": ["power", "benevolence"], "power": [1.0, 0.1], "benevolence": [0.1, 1.0]}).to_csv(
        tmp_path / "conva" / "cosine_matrix.csv", index=False)
    ours = dict(zip(anchors.anchor_table(tmp_path)["anchor"], anchors.anchor_table(tmp_path)["ours"]))
    assert ours["value-vector cosines"].startswith("needs an adjacent or opposite pair")
    pd.DataFrame({"value": ["power", "universalism"], "power": [1.0, -0.4], "universalism": [-0.4, 1.0]}).to_csv(
        tmp_path / "conva" / "cosine_matrix.csv", index=False)
    ours = dict(zip(anchors.anchor_table(tmp_path)["anchor"], anchors.anchor_table(tmp_path)["ours"]))
    assert ours["value-vector cosines"] == "opposite pairs -0.40 (n = 1)"


def test_prompts_are_rebuilt_when_records_lack_them(tmp_path):
    from mechvalue.data.bundled import load_dilemmas

    cfg = {"values": ["power", "benevolence"], "seed": 0, "config": {"study": {"n_queries": 3, "n_dilemmas": 2}}}
    records = [{"arm": "base", "target": t, "texts": ["a", "b", "c"]} for t in ("power", "benevolence")]
    prompts, how = report_examples.study_prompts(cfg, records)
    assert how == "rebuilt" and set(prompts) == {"power", "benevolence"}
    questions = {d.question for d in load_dilemmas("benevolence")}
    assert len(prompts["benevolence"]) == 3 and set(prompts["benevolence"]) <= questions
    records[0]["texts"] = ["a"]  # a count that does not match: that target's prompts are not guessed
    assert "power" not in report_examples.study_prompts(cfg, records)[0]
    stored = [{"arm": "base", "target": "power", "queries": ["q1"], "texts": ["a"]}]
    assert report_examples.study_prompts(cfg, stored) == ({"power": ["q1"]}, "stored")


def test_docs_methods_md_covers_the_four_methods():
    doc = Path(__file__).resolve().parents[2] / "docs" / "methods.md"
    text = doc.read_text(encoding="utf-8")
    for heading in ("ValueLocate", "NeVA", "Dual", "ConVA", "## 8."):
        assert heading in text, heading
