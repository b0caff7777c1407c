"""Paper anchors: the numbers docs/methods.md §8 reports next to this run's own.

:func:`anchor_table` reads a run folder (no model needed) and returns one row per entry of
:data:`ANCHORS`: the method, what is compared, the paper's value and ours ("not in this run" when
the run lacks the table, an error note when a table cannot be read).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mechvalue.core.values import ADJACENT_PAIRS, OPPOSITE_PAIRS, canonical
from mechvalue.report import figures as viz
from mechvalue.report.summary import with_undefined_nlr
from mechvalue.report.tables import (
    DUAL_TYPES,
    RENDER_ERRORS,
    EmptyTable,
    format_number,
    on_target,
    read_json_file,
    read_table,
)


def _pick(df: pd.DataFrame, method: str, col: str) -> float:
    row = df[df["method"] == method]
    return float(row[col].iloc[0]) if len(row) and col in row else math.nan


def _dual_by_type(run_dir: Path, names: tuple[str, ...]) -> str | None:
    df = read_table(run_dir, "dual/steering.csv")
    if df is None:
        return None
    met = df["metric"].astype(str).str.lower().str.replace("-", "_")
    sub = on_target(df[met.isin(names)])
    if sub.empty:
        return None
    means = sub.groupby(sub["vector_type"].astype(str).str.lower())["estimate"].mean()
    return " / ".join(format_number(means.get(t), "+.3f") for t in DUAL_TYPES)


def _anchor_values(run_dir: Path) -> dict[str, Callable[[], str | None]]:
    """Our number for each anchor key (functions; None when the run lacks the table)."""
    def summary():
        s = read_table(run_dir, "steering/summary.csv")
        return None if s is None else with_undefined_nlr(s)

    def structure(key, fmt=".2f"):
        s = read_json_file(run_dir, "dual/structure.json")
        if s is not None and key == "r2" and key not in s and isinstance(s.get("circumplex"), str):
            return s["circumplex"]  # e.g. "skipped: fewer than 3 values"
        return None if s is None or key not in s else format_number(s[key], fmt)

    def vl_fraction():
        df = read_table(run_dir, "valuelocate/fraction_vs_tau.csv")
        if df is None:
            return None
        r = df.iloc[(df["tau"] - 0.03).abs().argmin()]
        return f"{100 * r['fraction']:.2f}% at τ = {r['tau']:g}"

    def vl_depth():
        df = read_table(run_dir, "valuelocate/layer_counts.csv")
        if df is None:
            return None
        tot = df.groupby("layer")["count"].sum()
        return (f"mean relative depth {(df['relative_depth'] * df['count']).sum() / df['count'].sum():.2f}; "
                f"peak layer {tot.idxmax()}")

    def vl_causal():
        df = read_table(run_dir, "valuelocate/causal.csv")
        if df is None:
            return None
        df = on_target(df)
        df = df[(df["factor"] == df["factor"].max()) & (df["metric"] == df["metric"].iloc[0])]
        est = df.groupby("method")["estimate"].mean()
        return (f"{df['metric'].iloc[0]} at factor {df['factor'].iloc[0]:g}: ValueLocate "
                f"{format_number(est.get('valuelocate'), '+.3f')} vs random "
                f"{format_number(est.get('random_neurons'), '+.3f')}")

    def conva_csr():
        s = summary()
        if s is None:
            return None
        c, b = _pick(s, "conva", "control_success"), _pick(s, "base", "control_success")
        rel = f"{100 * (c - b) / b:+.1f}% relative, " if b else ""
        return f"{format_number(c)} vs base {format_number(b)} ({rel}{c - b:+.3f} absolute)"

    def conva_mmlu():
        s = summary()
        arms = ("base", "conva", "conva_nogate")
        if s is not None and "mmlu" not in s:
            return "not measured (no MMLU questions in this run)"
        return None if s is None else " / ".join(format_number(_pick(s, m, "mmlu")) for m in arms)

    def conva_cos():
        df = read_table(run_dir, "conva/cosine_matrix.csv")
        if df is None:
            return None
        m = viz.as_matrix(df, "conva/cosine_matrix.csv")
        have = set(m.index) & set(m.columns)
        means = {}
        for name, pairs in (("adjacent", ADJACENT_PAIRS), ("opposite", OPPOSITE_PAIRS)):
            inside = [(canonical(a), canonical(b)) for a, b in pairs if {canonical(a), canonical(b)} <= have]
            if inside:
                means[name] = (sum(m.loc[a, b] for a, b in inside) / len(inside), len(inside))
        if not means:
            return (f"needs an adjacent or opposite pair of values; this run has {', '.join(sorted(have))} "
                    f"(no such pair)")
        return " vs ".join(f"{k} pairs {v:+.2f} (n = {n})" for k, (v, n) in means.items())

    def neva_vs(other, cols=("control_success", "nlr", "mmlu")):
        s = summary()
        if s is None:
            return None
        return "; ".join(f"{c} {format_number(_pick(s, 'neva', c))} vs {format_number(_pick(s, other, c))}"
                         for c in cols if c in s)

    def dual_norm():
        df = read_table(run_dir, "dual/cosines.csv")
        if df is None:
            return None
        s = read_json_file(run_dir, "dual/structure.json") or {}
        if s.get("layer") in set(df["layer"]):
            df = df[df["layer"] == s["layer"]]
        col = df["retained_norm_prompted_perp"]
        return f"{col.min():.0%}–{col.max():.0%} across values"

    return {
        "vl_fraction": vl_fraction, "vl_depth": vl_depth, "vl_causal": vl_causal,
        "conva_csr": conva_csr, "conva_mmlu": conva_mmlu, "conva_cos": conva_cos,
        "neva_conva": lambda: neva_vs("conva"), "neva_random": lambda: neva_vs("random_neurons", ("control_success",)),
        "dual_pvq": lambda: _dual_by_type(run_dir, ("questionnaire", "pvq", "delta_questionnaire")),
        "dual_distinct": lambda: _dual_by_type(run_dir, ("distinct_2", "distinct2")),
        "dual_delta": lambda: structure("delta_share", ".0%"), "dual_norm": dual_norm,
        "dual_r2": lambda: structure("r2"),
    }


ANCHORS = (  # (key, method, anchor, paper value), from docs/methods.md §8
    ("vl_fraction", "ValueLocate", "share of value neurons", "< 0.4% of FFN neurons at τ = 0.03"),
    ("vl_depth", "ValueLocate", "where they sit", "around layer 15 (relative depth ≈ 0.35–0.55)"),
    ("vl_causal", "ValueLocate", "scaling shifts value scores", "shift; beats other locators (qualitative)"),
    ("conva_csr", "ConVA", "control success vs base", "+29.6% (relative; Llama-2-7b-chat)"),
    ("conva_mmlu", "ConVA", "MMLU base / gated / no gate", "0.476 / 0.455 / 0.272"),
    ("conva_cos", "ConVA", "value-vector cosines", "mirror Schwartz groups (qualitative)"),
    ("neva_conva", "NeVA", "NeVA vs ConVA", "higher CSR, lower NLR, smaller MMLU drop (qualitative)"),
    ("neva_random", "NeVA", "NeVA vs random neurons", "NeVA neurons ≫ random neurons (qualitative)"),
    ("dual_pvq", "Dual", "PVQ gain: intrinsic / prompted / int⊥ / prompt⊥", "+1.74 / +2.21 / +0.47 / +1.62"),
    ("dual_distinct", "Dual", "Distinct-2: intrinsic / prompted / int⊥ / prompt⊥", "0.362 / 0.342 / 0.402 / 0.203"),
    ("dual_delta", "Dual", "variance of δ_s explained by δ̄", "48–68%"),
    ("dual_norm", "Dual", "norm kept by prompted⊥intrinsic", "32–73%"),
    ("dual_r2", "Dual", "circumplex Procrustes R²", "≈ 0.6–0.7"),
)


def anchor_table(run_dir: str | Path) -> pd.DataFrame:
    """Paper anchors (docs/methods.md §8) next to this run's numbers: columns method, anchor, paper, ours."""
    run_dir, rows = Path(run_dir), []
    fns = _anchor_values(run_dir)
    for key, method, anchor, paper in ANCHORS:
        try:
            ours = fns[key]()
        except EmptyTable as exc:
            ours = str(exc)
        except RENDER_ERRORS as exc:
            ours = f"error: {exc}"
        rows.append((method, anchor, paper, "not in this run" if ours is None else ours))
    return pd.DataFrame(rows, columns=["method", "anchor", "paper", "ours"])
