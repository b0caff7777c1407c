"""Planted-signal tests for the dual-mechanism pipeline (mechvalue.methods.dual)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_model

from mechvalue.errors import CorruptFileError, MechvalueError
from mechvalue.methods import dual
from mechvalue.methods.dual import (
    DualConfig,
    DualVectors,
    contrast_groups,
    dual_axes,
    label_responses,
    neuron_classes,
    response_features,
    run_dual,
    steering_vectors,
    structure,
    value_vectors,
)
from mechvalue.neurons import angle_class_table, angle_classes
from mechvalue.public_data import MMLUQuestion
from mechvalue.values import VALUES


def _unit(d: int, k: int) -> torch.Tensor:
    e = torch.zeros(d)
    e[k] = 1.0
    return e


def _vectors(intrinsic, prompted, values=("benevolence",), layers=(0,), **meta) -> DualVectors:
    return DualVectors(list(values), list(layers), intrinsic, prompted,
                       {"model_id": "tiny-0", "processing": "none", **meta})


# ------------------------------------------------------------------ axes and orthogonalisation


def test_planted_shared_component_gives_axes_signs_and_cosines():
    d = 16
    s, t = 3 * _unit(d, 0), _unit(d, 1)
    v_int, v_prompt = s + 2 * t, s - 2 * t  # shared part s, opposite unique parts +-2t
    vec = _vectors(v_int[None, None], v_prompt[None, None])
    ax = vec.axes("benevolence", 0)
    assert torch.allclose(ax.shared, _unit(d, 0), atol=1e-6)
    assert torch.allclose(ax.intrinsic, t, atol=1e-6) and torch.allclose(ax.prompted, -t, atol=1e-6)
    shared, unique = dual_axes(vec)
    assert torch.allclose(shared[0, 0], ax.shared) and torch.allclose(unique[0, 0], ax.intrinsic)
    # flipping both vectors flips the shared axis (it follows v_int + v_prompt)
    assert torch.allclose(_vectors(-v_int[None, None], -v_prompt[None, None]).axes("benevolence", 0).shared,
                          -_unit(d, 0), atol=1e-6)
    row = vec.cosines().iloc[0]
    cos = 5 / 13
    assert row.cos_intrinsic_prompted == pytest.approx(cos, abs=1e-6)
    assert row.retained_norm_prompted_perp == pytest.approx(math.sqrt(1 - cos ** 2), abs=1e-6)
    assert row.retained_norm_intrinsic_perp == pytest.approx(math.sqrt(1 - cos ** 2), abs=1e-6)
    assert torch.allclose(vec.get("prompted_perp", "benevolence", 0) @ v_int, torch.tensor(0.0), atol=1e-5)
    # unnormalised variant: the shared axis leans toward the longer (here prompted) vector
    raw = _vectors(v_int[None, None], 3 * v_prompt[None, None]).axes("benevolence", 0, normalize=False)
    assert raw.shared @ _unit(d, 0) > 0.8 and raw.shared @ t < -0.3
    assert raw.intrinsic @ (v_int - 3 * v_prompt) > 0


def test_steering_vector_normalisations():
    d = 8
    vec = _vectors((3 * _unit(d, 0))[None, None], (4 * _unit(d, 0) + 4 * _unit(d, 1))[None, None], resid_norm=[10.0])
    raw = steering_vectors(vec, "benevolence", 0)
    assert raw["prompted_perp"].norm() == pytest.approx(4.0)  # keeps its reduced norm
    unit = steering_vectors(vec, "benevolence", 0, "unit")
    assert all(v.norm() == pytest.approx(1.0) for v in unit.values())
    scaled = steering_vectors(vec, "benevolence", 0, "unit_mean_norm")
    assert scaled["intrinsic"].norm() == pytest.approx(10.0)
    with pytest.raises(MechvalueError, match="normalize"):
        steering_vectors(vec, "benevolence", 0, "l2")


# ------------------------------------------------------------------ neuron classes


def _planted_w_out(d_model: int, d_mlp: int):
    """Rows at known angles (degrees, in the (shared, intrinsic) plane) with norm 5; the rest tiny noise."""
    g = torch.Generator().manual_seed(0)
    w = 1e-3 * torch.randn(d_mlp, d_model, generator=g)
    vec = _vectors((3 * _unit(d_model, 0) + 2 * _unit(d_model, 1))[None, None],
                   (3 * _unit(d_model, 0) - 2 * _unit(d_model, 1))[None, None])
    ax = vec.axes("benevolence", 0)
    planted = {3: (0, "shared"), 7: (20, "shared"), 11: (90, "intrinsic"), 12: (110, "intrinsic"),
               20: (-90, "prompted"), 21: (-65, "prompted"), 30: (45, "unassigned"), 31: (180, "unassigned")}
    for i, (deg, _) in planted.items():
        t = math.radians(deg)
        w[i] = 5 * (math.cos(t) * ax.shared + math.sin(t) * ax.intrinsic)
    return w, vec, ax, planted


def test_planted_w_out_rows_are_classified_exactly():
    w, _, ax, planted = _planted_w_out(32, 48)
    cls = angle_classes(w, ax, top_frac=len(planted) / 48, max_angle=30.0)
    df = angle_class_table(cls, value="benevolence", layer=0).set_index("neuron")
    assert set(df.index) == set(planted)
    for i, (_, name) in planted.items():
        assert df.loc[i, "class"] == name
        assert df.loc[i, "proj_norm"] == pytest.approx(5.0, abs=1e-3)
    assert df.loc[7, "angle"] == pytest.approx(20.0, abs=0.05)
    assert df.loc[21, "angle"] == pytest.approx(25.0, abs=0.05)
    assert df.loc[30, "angle"] == pytest.approx(45.0, abs=0.05)
    unsigned = angle_class_table(angle_classes(w, ax, top_frac=len(planted) / 48, signed=False), value="b", layer=0)
    assert unsigned.set_index("neuron").loc[31, "class"] == "shared"  # |cos|: a row along -u_shared counts


def test_neuron_classes_reads_the_models_w_out_and_refuses_other_processing(tokenizer):
    model = make_tiny_model(tokenizer, seed=3)
    w, vec, _, planted = _planted_w_out(model.cfg.d_model, model.cfg.d_mlp)
    vec = DualVectors(vec.values, [1], vec.intrinsic, vec.prompted, {**vec.meta, "model_id": "tiny-3"})
    with torch.no_grad():
        model.blocks[1].mlp.W_out.copy_(w)
    df, counts = neuron_classes(model, vec, layer=1, top_frac=len(planted) / model.cfg.d_mlp)
    assert counts.iloc[0][["shared", "intrinsic", "prompted", "unassigned"]].tolist() == [2, 2, 2, 2]
    assert dict(zip(df.neuron, df["class"])) == {i: c for i, (_, c) in planted.items()}
    model.mechvalue_info = {"model_id": "tiny-3", "processing": "fold_ln"}
    with pytest.raises(MechvalueError, match="weight processing"):
        neuron_classes(model, vec, layer=1)


# ------------------------------------------------------------------ value vectors


def _rows(n: int, condition: str, value: str | None, texts):
    return [{"id": f"{condition}:{value}|q{k}" if value else f"intrinsic|q{k}", "condition": condition,
             "value": value, "query_id": f"q{k}", "query": f"Question number {k}?",
             "system": None if value is None else "Please be kind.", "response": texts[k % len(texts)]}
            for k in range(n)]


class WordJudge:
    """Scores 1 when the value's marker word occurs."""

    name = "word"

    def __init__(self, words):
        self.words, self.calls = words, 0

    def judge(self, texts, value):
        self.calls += 1
        return np.array([float(self.words.get(value, "@@") in t) for t in texts])


def test_planted_direction_in_one_condition_is_recovered(tokenizer, tmp_path):
    """Token embeddings carry planted directions: u for the intrinsic marker, w for the prompted one."""
    model = make_tiny_model(tokenizer, seed=1)
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    z = torch.randn(d, generator=g)
    z = torch.nn.functional.normalize(z - (z @ u) * u, dim=0)
    w = (u + z) / math.sqrt(2)  # shares u, plus a unique part z
    ids = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in (" kind", " warm", " table")}
    assert all(len(v) == 1 for v in ids.values())
    with torch.no_grad():
        model.embed.W_E[ids[" kind"][0]] += 40 * u
        model.embed.W_E[ids[" warm"][0]] += 40 * w
    intr = _rows(8, "intrinsic", None, [" table kind table kind table kind", " table table table table table table"])
    prom = _rows(8, "prompted", "benevolence", [" table warm table warm table warm", " table table table table"])
    rows = intr + prom
    judge = WordJudge({"benevolence": "kind"})
    judge.judge = lambda texts, value: np.array([float(("kind" in t) or ("warm" in t)) for t in texts])
    labels = label_responses(rows, judge, ["benevolence"], tmp_path / "labels.jsonl")
    layers = [0, 1, 2]
    feats = response_features(model, rows, layers, batch_size=8, progress=False)
    assert feats.shape == (16, 3, d)
    vec = value_vectors(feats, rows, labels, ["benevolence"], layers, meta={"model_id": "tiny-1"})
    assert [g["rule"] for g in vec.meta["groups"]] == ["labels", "labels"]
    for j in range(3):
        v_int, v_prompt = vec.intrinsic[0, j], vec.prompted[0, j]
        assert torch.nn.functional.cosine_similarity(v_int, u, dim=0) > 0.95
        assert torch.nn.functional.cosine_similarity(v_prompt, w, dim=0) > 0.95
        assert vec.pair.cos[0, j] == pytest.approx(1 / math.sqrt(2), abs=0.06)
        shared = vec.axes("benevolence", layers[j]).shared
        assert torch.nn.functional.cosine_similarity(shared, u + w, dim=0) > 0.95


def _labels(rows, scores):
    return pd.DataFrame({"id": [r["id"] for r in rows], "condition": [r["condition"] for r in rows],
                         "value": "benevolence", "judge": "x", "score": scores,
                         "label": (np.asarray(scores) >= 0.5).astype(int)})


def test_contrast_groups_fall_back_along_the_recorded_chain():
    intr = _rows(6, "intrinsic", None, ["a"])
    prom = _rows(6, "prompted", "benevolence", ["b"])
    rows = intr + prom
    # intrinsic all exp by label -> split by score around the median; prompted all exp -> vs intrinsic unexp
    lab = _labels(rows, [0.9, 0.8, 0.7, 0.6, 0.5, 0.5] + [1.0] * 6)
    exp, unexp, rule = contrast_groups(rows, lab, "benevolence", "intrinsic")
    assert rule == "score_split" and exp == [0, 1, 2] and unexp == [3, 4, 5]
    lab2 = _labels(rows, [1, 1, 0, 0, 0, 0] + [1.0] * 6)
    assert contrast_groups(rows, lab2, "benevolence", "prompted")[2] == "exp_vs_intrinsic_unexp"
    assert contrast_groups(rows, lab2, "benevolence", "intrinsic")[2] == "labels"
    lab3 = _labels(rows, [1.0] * 6 + [0.0] * 6)  # nothing unexp in intrinsic, nothing exp in prompted
    assert contrast_groups(rows, lab3, "benevolence", "prompted")[2] == "condition"
    assert contrast_groups(rows, lab3, "benevolence", "intrinsic")[2] == "empty"
    lab4 = _labels(rows, [1, 1, 0, 0, 0, 0] + [1, 1, 1, 0, 0, 0])
    assert contrast_groups(rows, lab4, "benevolence", "prompted")[2] == "labels"
    assert contrast_groups(rows, lab4, "benevolence", "prompted", contrast="vs_intrinsic")[2] == \
        "exp_vs_intrinsic_unexp"
    feats = torch.randn(12, 2, 4)
    vec = value_vectors(feats, rows, lab3, ["benevolence"], [0, 1])
    assert torch.isnan(vec.intrinsic).all() and vec.finite_values(0) == []
    with pytest.raises(MechvalueError, match="undefined"):
        vec.axes("benevolence", 0)
    with pytest.raises(MechvalueError, match="features must be"):
        value_vectors(feats[:, :1], rows, lab3, ["benevolence"], [0, 1])


def test_dual_vectors_save_load_and_bad_inputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    vec = _vectors(torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g), values=["power", "security"],
                   layers=[0, 2, 4], judge="word", groups=[{"value": "power", "rule": "labels"}])
    path = vec.save(tmp_path / "v.safetensors")
    back = DualVectors.load(path)
    assert back.values == ["power", "security"] and back.layers == [0, 2, 4]
    assert torch.equal(back.intrinsic, vec.intrinsic)
    assert torch.allclose(back.pair.prompted_perp, vec.pair.prompted_perp)
    assert back.meta["judge"] == "word" and back.meta["processing"] == "none"
    with pytest.raises(MechvalueError, match="do not match"):
        DualVectors(["power"], [0], torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))
    with pytest.raises(MechvalueError, match="no vectors"):
        vec.get("intrinsic", "power", 1)
    with pytest.raises(MechvalueError, match="vector type"):
        vec.stack("shared")
    torch.save({}, tmp_path / "bad.safetensors")
    with pytest.raises(CorruptFileError):
        DualVectors.load(tmp_path / "bad.safetensors")
    for bad in (dict(contrast="both"), dict(n_queries=1), dict(alphas=()), dict(steer_normalize="l2"),
                dict(max_mmlu_drop=5)):
        with pytest.raises(MechvalueError, match="DualConfig"):
            DualConfig(**bad)


# ------------------------------------------------------------------ structure


def test_structure_recovers_a_planted_circumplex_and_common_delta():
    d, n = 12, len(VALUES)
    angles = torch.tensor([math.radians(36 * k) for k in range(n)])
    g = torch.Generator().manual_seed(0)
    circle = 3 * (torch.cos(angles)[:, None] * _unit(d, 0) + torch.sin(angles)[:, None] * _unit(d, 1))
    intrinsic = circle + 0.05 * torch.randn(n, d, generator=g)
    prompted = circle + 2 * _unit(d, 5) + 0.05 * torch.randn(n, d, generator=g)  # common delta along e5
    vec = _vectors(intrinsic[:, None], prompted[:, None], values=list(VALUES))
    circ, mats, info = structure(vec, 0, n_permutations=200)
    assert info["r2"] > 0.98 and info["p_value"] < 0.02 and info["delta_share"] > 0.98
    assert list(circ.value) == list(VALUES)
    assert np.allclose(circ[["x", "y"]].to_numpy(), circ[["theory_x", "theory_y"]].to_numpy(), atol=0.05)
    m = mats["shared"].set_index("value")
    assert m.loc["universalism", "benevolence"] > m.loc["universalism", "power"]
    assert list(mats["shared"].columns) == ["value", *VALUES]


# ------------------------------------------------------------------ the pipeline on a tiny model


MMLU = [MMLUQuestion("test", f"What is {k} plus {k}?", (str(2 * k), str(k), "0", "1"), 0) for k in range(1, 5)]


@pytest.fixture(scope="module")
def tiny_run(tokenizer, tmp_path_factory, monkeypatch_module):
    model = make_tiny_model(tokenizer, seed=5)
    calls = []
    real = dual.generate

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch_module.setattr(dual, "generate", counting)
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

    rows = _rows(3, "intrinsic", None, ["some text"])
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
