"""Tests of the dual-mechanism pipeline (mechvalue.methods.dual, dual_responses, dual_causal): steering
vectors, run_dual on a tiny model (outputs, resuming, bad arguments) and the quick preset on SmolLM2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_model
from dual_helpers import WordJudge, basis, make_rows, make_vectors

from mechvalue.core.errors import CorruptFileError, MechvalueError
from mechvalue.data.public import MMLUQuestion
from mechvalue.lm.generation import generate
from mechvalue.methods import dual_causal, dual_responses
from mechvalue.methods.dual import DualConfig, DualVectors, label_responses, run_dual, steering_vectors

# ------------------------------------------------------------------ steering vectors


def test_steering_vector_normalisations():
    d = 8
    vec = make_vectors((3 * basis(d, 0))[None, None], (4 * basis(d, 0) + 4 * basis(d, 1))[None, None],
                       resid_norm=[10.0])
    raw = steering_vectors(vec, "benevolence", 0)
    assert raw["prompted_perp"].norm() == pytest.approx(4.0)  # keeps its reduced norm
    unit = steering_vectors(vec, "benevolence", 0, "unit")
    assert all(v.norm() == pytest.approx(1.0) for v in unit.values())
    scaled = steering_vectors(vec, "benevolence", 0, "unit_mean_norm")
    assert scaled["intrinsic"].norm() == pytest.approx(10.0)
    with pytest.raises(MechvalueError, match="normalize"):
        steering_vectors(vec, "benevolence", 0, "l2")


# ------------------------------------------------------------------ the pipeline on a tiny model


MMLU = [MMLUQuestion("test", f"What is {k} plus {k}?", (str(2 * k), str(k), "0", "1"), 0) for k in range(1, 5)]


@pytest.fixture(scope="module")
def tiny_run(tokenizer, tmp_path_factory, monkeypatch_module):
    model = make_tiny_model(tokenizer, seed=5)
    calls = []

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return generate(*args, **kwargs)

    for module in (dual_responses, dual_causal):  # every generate call of the pipeline
        monkeypatch_module.setattr(module, "generate", counting)
    judge = WordJudge({"benevolence": "e", "power": "a", "universalism": "o"})
    judge.judge = lambda texts, value: np.array([(hash((t, value)) % 97) / 97 for t in texts])
    judge.name = "hash"
    out = tmp_path_factory.mktemp("dual")
    config = DualConfig.quick(n_queries=4, batch_size=5, min_group=1, n_mmlu=4, n_permutations=50, n_diversity=2,
                              diversity_tokens=6)
    values = ["power", "benevolence", "universalism"]
    res = run_dual(model, out, values=values, config=config, judge=judge, mmlu=MMLU, progress=False)
    return {"model": model, "out": out, "calls": calls, "judge": judge, "config": config, "values": values,
            "res": res}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_run_dual_writes_every_output(tiny_run):
    out, res = tiny_run["out"], tiny_run["res"]
    for name in ("responses.jsonl", "labels.jsonl", "vectors.safetensors", "cosines.csv", "neuron_classes.csv",
                 "class_counts.csv", "steering.csv", "circumplex.csv", "cosine_matrix.csv", "structure.json"):
        assert (out / name).exists(), name
    assert len(res["responses"]) == 4 * 4  # intrinsic + three values
    assert list(pd.read_csv(out / "cosines.csv").columns) == ["value", "layer", "cos_intrinsic_prompted",
                                                              "retained_norm_prompted_perp",
                                                              "retained_norm_intrinsic_perp"]
    assert list(pd.read_csv(out / "class_counts.csv").columns)[:5] == ["value", "layer", "shared", "intrinsic",
                                                                      "prompted"]
    assert list(pd.read_csv(out / "cosine_matrix.csv").columns) == ["value", "universalism", "benevolence", "power"]
    assert list(pd.read_csv(out / "circumplex.csv").columns) == ["value", "x", "y", "theory_x", "theory_y"]
    st = pd.read_csv(out / "steering.csv")
    assert list(st.columns[:8]) == ["method", "target", "value", "metric", "estimate", "ci_low", "ci_high", "n"]
    arms = set(st.arm)
    assert {"intrinsic", "prompted", "intrinsic_perp", "prompted_perp", "random_direction", "base"} <= arms
    assert {"delta_questionnaire", "delta_dilemma_pref", "distinct_2", "ead_2"} <= set(st.metric)
    assert (st.target == "benevolence").all() and st[st.vector_type.notna()].alpha.notna().all()
    sizes = st[st.arm == "neurons"].set_index("neuron_class").n_neurons.to_dict()
    for c, n in sizes.items():  # random-neuron controls match each class's size
        assert set(st[st.neuron_class == f"random:{c}"].n_neurons) == {n}
    info = json.loads((out / "structure.json").read_text())
    assert {"r2", "p_value", "null_mean", "delta_share", "layer", "alpha"} <= set(info)
    assert info["layer"] == tiny_run["model"].cfg.n_layers // 2
    vec = DualVectors.load(out / "vectors.safetensors", model=tiny_run["model"])
    assert vec.intrinsic.shape == (3, tiny_run["model"].cfg.n_layers, tiny_run["model"].cfg.d_model)
    assert vec.meta["judge"] == "hash" and vec.meta["model_id"] == "tiny-5"


def test_run_dual_resumes_without_regenerating(tiny_run):
    t = tiny_run
    first = len(t["calls"])
    assert first > 0
    again = run_dual(t["model"], t["out"], values=t["values"], config=t["config"], judge=t["judge"], mmlu=MMLU,
                     progress=False)
    assert len(t["calls"]) == first  # responses, features, calibration and steering all reused
    pd.testing.assert_frame_equal(again["steering"], t["res"]["steering"])
    pd.testing.assert_frame_equal(again["cosines"], t["res"]["cosines"])
    # an interrupted generation: drop the last batch; only it is regenerated, with the same texts
    path = t["out"] / "responses.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # a torn last line too
    before = len(t["calls"])
    again = run_dual(t["model"], t["out"], values=t["values"], config=t["config"], judge=t["judge"], mmlu=MMLU,
                     progress=False)
    assert t["calls"][before:] == [t["config"].batch_size if len(lines) % t["config"].batch_size == 0
                                   else len(lines) % t["config"].batch_size]
    assert again["responses"].response.tolist() == t["res"]["responses"].response.tolist()
    with pytest.raises(CorruptFileError, match="generated with"):
        run_dual(t["model"], t["out"], values=t["values"], config=DualConfig.quick(n_queries=4, max_new_tokens=3),
                 judge=t["judge"], progress=False)


def test_run_dual_rejects_bad_arguments(tiny_run, tmp_path):
    model = tiny_run["model"]
    with pytest.raises(MechvalueError, match="judge"):
        run_dual(model, tmp_path, values=["power"], config=DualConfig.quick(), judge=object(), progress=False)
    with pytest.raises(MechvalueError, match="analysis layer"):
        run_dual(model, tmp_path, values=["power"], config=DualConfig.quick(layers=(0,), layer=1), progress=False)
    with pytest.raises(MechvalueError):
        run_dual(model, tmp_path, values=["kindness"], config=DualConfig.quick(), progress=False)

    class Short:
        name = "short"

        def judge(self, texts, value):
            return np.zeros(1)

    rows = make_rows(3, "intrinsic", None, ["some text"])
    with pytest.raises(MechvalueError, match="returned 1 scores for 3 texts"):
        label_responses(rows, Short(), ["power"], tmp_path / "labels.jsonl")


# ------------------------------------------------------------------ the real model


@pytest.mark.model
def test_quick_preset_on_smollm(smollm, tmp_path):
    class LengthJudge:  # continuous scores: the median split always leaves two groups
        name = "length"

        def judge(self, texts, value):
            return np.array([len(t.split()) / 100 + 0.001 * (hash((t, value)) % 7) for t in texts])

    values = ["benevolence", "power", "universalism"]
    config = DualConfig.quick(max_new_tokens=8, alpha=4.0, n_items=1, n_dilemmas=1)  # alpha fixed: no MMLU here
    res = run_dual(smollm, tmp_path, values=values, config=config, judge=LengthJudge(), progress=False)
    assert len(res["responses"]) == 4 * 4 and res["responses"].response.str.strip().str.len().gt(0).all()
    layer = smollm.cfg.n_layers // 2
    cos = res["cosines"]
    assert cos[cos.layer == layer].cos_intrinsic_prompted.notna().all()
    assert res["class_counts"].kept.eq(round(0.05 * smollm.cfg.d_mlp)).all() and len(res["class_counts"]) == 3
    st = res["steering"]
    assert set(st.arm) >= {"prompted", "intrinsic", "intrinsic_perp", "prompted_perp", "random_direction", "neurons"}
    assert np.isfinite(st.estimate).all() and st.target.eq("benevolence").all() and st.alpha_source.str.startswith(
        "fixed").all()
    assert res["structure"]["layer"] == layer and 0 <= res["structure"]["r2"] <= 1
    assert (tmp_path / "steering.csv").exists() and (tmp_path / "structure.json").exists()
