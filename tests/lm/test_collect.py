"""Activation statistics: planted-signal checks against hand computations on a tiny model."""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import make_tiny_model

from mechvalue.core.errors import CorruptFileError, DataError, HookError
from mechvalue.lm.collect import ActivationStats, collect
from mechvalue.lm.prompts import SPANS, chat, encode, raw

# the package re-exports the function `collect`, which shadows the submodule attribute
collect_mod = importlib.import_module("mechvalue.lm.collect")
ATOL = 1e-5

# Mixed lengths (7 rows, batch_size 3 -> three padded batches, the last one partial).
EXAMPLES = [
    chat("Hi.", response="Hello!"),
    chat("Plan a three-day trip to Lisbon for a family with two teenagers who love history and food.",
         system="You value tradition above all.", response="Start at the castle, then walk through Alfama."),
    raw("The committee met on a rainy Tuesday", response="and agreed on cuts."),
    chat("What should I cook tonight?", response="A lentil soup: quick, cheap and warm."),
    chat("Should I take the job abroad or stay near my parents?", system="Be brief.", response="Stay."),
    raw("Bread", response="rises."),
    chat("Name a colour.", response="Green, like a meadow after rain in early spring."),
]
FEATURES = {"blocks.1.hook_resid_mid": "last", "blocks.0.mlp.hook_post": "mean", "ln_final.hook_normalized": "last"}


def _read_positions(tokenizer, example, span: str, skip_special: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of one unpadded example and the positions the span reads (computed independently)."""
    p, r = encode(tokenizer, example)
    ids = p + r
    special = set(tokenizer.all_special_ids)
    if span == "last":
        return ids, [len(p) - 1]
    rng = {"prompt": range(len(p)), "response": range(len(p), len(ids)), "all": range(len(ids))}[span]
    return ids, [i for i in rng if not (skip_special and ids[i] in special)]


def _by_hand(model, examples, span, layers, resid_hook="hook_resid_post", features=None):
    """The statistics computed one example at a time from ``run_with_cache`` (no padding, no batching)."""
    cfg = model.cfg
    resid = torch.zeros(len(layers), cfg.d_model)
    active = torch.zeros(len(layers), cfg.d_mlp)
    post = torch.zeros(len(layers), cfg.d_mlp)
    n_tokens = 0
    feats = {name: [] for name in (features or {})}
    for ex in examples:
        ids, pos = _read_positions(model.tokenizer, ex, span)
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.tensor([ids]))
        for k, layer in enumerate(layers):
            resid[k] += cache[f"blocks.{layer}.{resid_hook}"][0, pos].mean(0)
            active[k] += (cache[f"blocks.{layer}.mlp.hook_pre"][0, pos] > 0).float().sum(0)
            post[k] += cache[f"blocks.{layer}.mlp.hook_post"][0, pos].sum(0)
        for name, reduce in (features or {}).items():
            act = cache[name][0, pos]
            feats[name].append(act[-1] if reduce == "last" else act.mean(0))
        n_tokens += len(pos)
    return {"resid_mean": resid / len(examples), "act_prob": active / n_tokens, "post_mean": post / n_tokens,
            "n_tokens": n_tokens, "features": {k: torch.stack(v) for k, v in feats.items()}}


def _assert_close(a, b, atol=ATOL):
    assert a.shape == b.shape
    diff = (a.float() - b.float()).abs().max().item()
    assert diff <= atol, diff


@pytest.mark.parametrize("span", SPANS)
def test_collect_matches_hand_computation(tiny_model, span):
    layers = [0, 2]
    stats = collect(tiny_model, EXAMPLES, layers=layers, span=span, batch_size=3, features=FEATURES,
                    progress=False)
    ref = _by_hand(tiny_model, EXAMPLES, span, layers, features=FEATURES)
    assert stats.layers == layers
    assert stats.n_examples == len(EXAMPLES)
    assert stats.n_tokens == ref["n_tokens"]
    for name in ("resid_mean", "act_prob", "post_mean"):
        _assert_close(getattr(stats, name), ref[name])
    assert set(stats.features) == set(FEATURES)
    for name in FEATURES:
        assert stats.features[name].dtype == torch.float32
        _assert_close(stats.features[name], ref["features"][name])
    assert ((stats.act_prob >= 0) & (stats.act_prob <= 1)).all()
    # the statistic is not trivially constant: examples differ, neurons differ
    assert stats.act_prob.std() > 0
    assert stats.meta["span"] == span and stats.meta["model_id"] == "tiny-0"


def test_batch_size_and_padding_do_not_change_results(tiny_model):
    one = collect(tiny_model, EXAMPLES, span="all", batch_size=1, progress=False)
    many = collect(tiny_model, EXAMPLES, span="all", batch_size=7, progress=False)
    for name in ("resid_mean", "act_prob", "post_mean"):
        _assert_close(getattr(one, name), getattr(many, name))


def test_resid_hook_choice_and_default_layers(tiny_model):
    stats = collect(tiny_model, EXAMPLES, span="prompt", resid_hook_name="hook_resid_pre", mlp=False,
                    batch_size=4, progress=False)
    assert stats.layers == [0, 1, 2]
    assert stats.act_prob is None and stats.post_mean is None
    ref = _by_hand(tiny_model, EXAMPLES, "prompt", [0, 1, 2], resid_hook="hook_resid_pre")
    _assert_close(stats.resid_mean, ref["resid_mean"])
    assert stats.meta["resid_hook"] == "hook_resid_pre"
    # negative indices count from the end and are deduplicated
    neg = collect(tiny_model, EXAMPLES[:3], layers=[-1, 2], resid=False, progress=False)
    assert neg.layers == [2] and neg.resid_mean is None
    assert neg.layer_pos(2) == 0
    with pytest.raises(HookError, match="not collected"):
        neg.layer_pos(0)


def test_features_only(tiny_model):
    stats = collect(tiny_model, EXAMPLES, resid=False, mlp=False, features=["blocks.2.hook_resid_post"],
                    span="last", batch_size=2, progress=False)
    ref = _by_hand(tiny_model, EXAMPLES, "last", [], features={"blocks.2.hook_resid_post": "last"})
    _assert_close(stats.features["blocks.2.hook_resid_post"], ref["features"]["blocks.2.hook_resid_post"])
    assert stats.resid_mean is None and stats.act_prob is None


@pytest.mark.parametrize("reduce", ["last", "mean"])
def test_multi_axis_features_are_flattened(tiny_model, reduce):
    name = "blocks.1.attn.hook_z"  # [batch, pos, head, d_head]
    stats = collect(tiny_model, EXAMPLES, resid=False, mlp=False, features={name: reduce}, span="all",
                    batch_size=3, progress=False)
    ref = _by_hand(tiny_model, EXAMPLES, "all", [], features={name: reduce})
    cfg = tiny_model.cfg
    assert stats.features[name].shape == (len(EXAMPLES), cfg.n_heads * cfg.d_head)
    _assert_close(stats.features[name], ref["features"][name].flatten(1))


def test_feature_hook_without_position_axis_is_refused(tiny_model):
    with pytest.raises(HookError, match="hook_pattern"):
        collect(tiny_model, EXAMPLES, resid=False, mlp=False, features=["blocks.0.attn.hook_pattern"],
                progress=False)


# ----------------------------------------------------------------------------- planted neuron

NEURON = 5
DEAD = 9  # a neuron whose pre-activation is exactly 0 everywhere: never counted as active
DIM = 7


def _planted_model(tokenizer, trigger: int, gated: bool):
    """Neuron NEURON of every layer fires (hook_pre > 0) exactly at positions holding ``trigger``.

    Residual dimension DIM carries +1 for the trigger token and -1 for every other token; no
    attention head or MLP writes to it, so it survives unchanged to every layer's MLP input.
    """
    model = make_tiny_model(tokenizer, seed=3, gated=gated)
    with torch.no_grad():
        model.embed.W_E[:, DIM] = -1.0
        model.embed.W_E[trigger, DIM] = 1.0
        for block in model.blocks:
            block.attn.W_O[..., DIM] = 0.0
            block.attn.b_O[DIM] = 0.0
            block.mlp.W_out[:, DIM] = 0.0
            block.mlp.b_out[DIM] = 0.0
            block.ln2.w[DIM] = 1.0
            w = block.mlp.W_gate if gated else block.mlp.W_in
            w[:, NEURON] = 0.0
            w[DIM, NEURON] = 5.0
            w[:, DEAD] = 0.0
            if not gated:
                block.mlp.b_in[NEURON] = 0.0
                block.mlp.b_in[DEAD] = 0.0
    return model


@pytest.mark.parametrize("gated", [True, False])
def test_planted_neuron_fires_only_on_its_token(tokenizer, gated):
    (trigger,) = tokenizer(" zebra", add_special_tokens=False)["input_ids"]
    model = _planted_model(tokenizer, trigger, gated)
    with_token = [raw("I saw a zebra"), raw("The zebra"), raw("Look, a zebra")]
    without = [raw("I saw a horse"), raw("The cat"), raw("Look, a lion")]
    layers = [0, 1, 2]
    for span in ("last", "all"):
        yes = collect(model, with_token, layers=layers, span=span, batch_size=2, progress=False)
        no = collect(model, without, layers=layers, span=span, batch_size=2, progress=False)
        assert torch.all(no.act_prob[:, NEURON] == 0.0)
        assert torch.all(yes.act_prob[:, DEAD] == 0.0) and torch.all(no.act_prob[:, DEAD] == 0.0)
        if span == "last":  # the read token is the trigger itself
            assert torch.all(yes.act_prob[:, NEURON] == 1.0)
        else:  # pooled over tokens: exactly one trigger per example
            assert torch.allclose(yes.act_prob[:, NEURON], torch.full((3,), len(with_token) / yes.n_tokens))
    # in a chat prompt the trigger is in the user turn: fires on "prompt" tokens, never on the last one
    conv = [chat("Tell me about the zebra"), chat("Is a zebra a horse?")]
    prompt_stats = collect(model, conv, layers=0, span="prompt", progress=False)
    assert prompt_stats.act_prob[0, NEURON].item() == pytest.approx(2 / prompt_stats.n_tokens)
    assert collect(model, conv, layers=0, span="last", progress=False).act_prob[0, NEURON].item() == 0.0
    resp = collect(model, [chat("Name an animal.", response="A zebra.")], layers=0, span="response",
                   progress=False)
    assert resp.act_prob[0, NEURON].item() == pytest.approx(1 / resp.n_tokens)


# ----------------------------------------------------------------------------- errors


def test_errors(tiny_model):
    with pytest.raises(DataError, match="empty"):
        collect(tiny_model, [], progress=False)
    with pytest.raises(HookError, match="3 layers"):
        collect(tiny_model, EXAMPLES, layers=[3], progress=False)
    with pytest.raises(HookError, match="does not exist"):
        collect(tiny_model, EXAMPLES, layers=[-4], progress=False)
    with pytest.raises(HookError, match="hook_post"):
        collect(tiny_model, EXAMPLES, features=["blocks.0.mlp.hook_psot"], progress=False)
    with pytest.raises(HookError, match="no hook"):
        collect(tiny_model, EXAMPLES, features={"blocks.9.hook_resid_post": "last"}, progress=False)
    with pytest.raises(HookError, match="hook_resid_mid"):
        collect(tiny_model, EXAMPLES, resid_hook_name="hook_resid_middle", progress=False)
    with pytest.raises(DataError, match="'last' or 'mean'"):
        collect(tiny_model, EXAMPLES, features={"blocks.0.hook_resid_post": "max"}, progress=False)
    with pytest.raises(DataError, match="nothing to collect"):
        collect(tiny_model, EXAMPLES, resid=False, mlp=False, progress=False)
    # a row with nothing to read (no response; an empty raw text is only a skipped BOS)
    with pytest.raises(DataError, match="no tokens to read"):
        collect(tiny_model, [chat("a", response="b"), chat("no reply")], span="response", progress=False)
    with pytest.raises(DataError, match="no tokens to read"):
        collect(tiny_model, [raw("fine"), raw("")], span="all", progress=False)


# ----------------------------------------------------------------------------- save / load


def test_save_load_roundtrip(tiny_model, tmp_path):
    stats = collect(tiny_model, EXAMPLES, layers=[1, 2], span="response", features=FEATURES, batch_size=3,
                    progress=False)
    path = stats.save(tmp_path / "stats.safetensors")
    back = ActivationStats.load(path, model=tiny_model)
    assert back.layers == stats.layers
    assert (back.n_examples, back.n_tokens) == (stats.n_examples, stats.n_tokens)
    for name in ("resid_mean", "act_prob", "post_mean"):
        assert torch.equal(getattr(back, name), getattr(stats, name))
    assert set(back.features) == set(stats.features)
    for name in stats.features:
        assert torch.equal(back.features[name], stats.features[name])
    assert back.meta["span"] == "response" and back.meta["fingerprint"] == stats.meta["fingerprint"]
    # None statistics stay None
    only_resid = collect(tiny_model, EXAMPLES[:2], layers=0, mlp=False, progress=False)
    again = ActivationStats.load(only_resid.save(tmp_path / "r.safetensors"))
    assert again.act_prob is None and again.post_mean is None
    assert torch.equal(again.resid_mean, only_resid.resid_mean)


def test_load_refuses_other_model_and_corrupt_files(tiny_model, tokenizer, tmp_path):
    stats = collect(tiny_model, EXAMPLES[:3], layers=0, progress=False)
    path = stats.save(tmp_path / "stats.safetensors")
    other = make_tiny_model(tokenizer, seed=1)
    with pytest.raises(CorruptFileError, match="model_id"):
        ActivationStats.load(path, model=other)
    ActivationStats.load(path)  # without a model, no check
    other.mechvalue_info = {"model_id": "tiny-0", "processing": "fold_ln"}
    with pytest.raises(CorruptFileError, match="processing"):
        ActivationStats.load(path, model=other)

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CorruptFileError):
        ActivationStats.load(junk)
    with pytest.raises(CorruptFileError, match="no such file"):
        ActivationStats.load(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(CorruptFileError):
        ActivationStats.load(truncated)


# ----------------------------------------------------------------------------- checkpoint / resume


def test_checkpoint_resume_after_crash(tiny_model, tmp_path, monkeypatch):
    kwargs = dict(layers=[0, 2], span="all", batch_size=2, features=FEATURES, progress=False)
    clean = collect(tiny_model, EXAMPLES, **kwargs)  # 4 batches
    ckpt = tmp_path / "ckpt.safetensors"
    real_run = collect_mod._run
    calls = []

    def crashing(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real_run(*args, **kw)

    monkeypatch.setattr(collect_mod, "_run", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect(tiny_model, EXAMPLES, checkpoint=ckpt, checkpoint_every=1, **kwargs)
    assert ckpt.exists()

    calls.clear()
    monkeypatch.setattr(collect_mod, "_run", lambda *a, **kw: (calls.append(1), real_run(*a, **kw)))
    # a checkpoint of other inputs or settings is refused, not silently mixed in
    with pytest.raises(CorruptFileError, match="checkpoint"):
        collect(tiny_model, EXAMPLES[:-1], checkpoint=ckpt, checkpoint_every=1, **kwargs)
    assert ckpt.exists() and not calls
    resumed = collect(tiny_model, EXAMPLES, checkpoint=ckpt, checkpoint_every=1, **kwargs)
    assert len(calls) == 2  # batches 3 and 4 only: the first two came from the checkpoint
    assert not ckpt.exists()
    assert (resumed.n_examples, resumed.n_tokens) == (clean.n_examples, clean.n_tokens)
    for name in ("resid_mean", "act_prob", "post_mean"):
        _assert_close(getattr(resumed, name), getattr(clean, name), atol=1e-6)
    for name in FEATURES:
        _assert_close(resumed.features[name], clean.features[name], atol=1e-6)


def test_clean_run_with_checkpoint_leaves_no_file(tiny_model, tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    plain = collect(tiny_model, EXAMPLES, layers=1, batch_size=2, progress=False)
    with_ckpt = collect(tiny_model, EXAMPLES, layers=1, batch_size=2, progress=False, checkpoint=ckpt,
                        checkpoint_every=1)
    assert not ckpt.exists()
    _assert_close(plain.resid_mean, with_ckpt.resid_mean, atol=0)


# ----------------------------------------------------------------------------- both model classes

BRIDGE_PROMPTS = [
    chat("How should I spend a free Saturday?"),
    chat("Should I lend money to my brother?", system="You value benevolence above all."),
    chat("Describe a good leader.", response="Someone who listens before deciding."),
]


@pytest.mark.model
def test_bridge_and_hooked_transformer_agree(smollm):
    """TransformerBridge (compatibility mode) and HookedTransformer give the same statistics (~25 s to load)."""
    from mechvalue.lm.models import load_bridge

    bridge = load_bridge(device="cpu")
    kwargs = dict(layers=[0, 29], span="prompt", batch_size=2, progress=False,
                  features={"blocks.29.hook_resid_post": "last", "blocks.14.mlp.hook_post": "mean"})
    ht = collect(smollm, BRIDGE_PROMPTS, **kwargs)
    br = collect(bridge, BRIDGE_PROMPTS, **kwargs)
    assert (br.n_tokens, br.n_examples) == (ht.n_tokens, ht.n_examples)
    # activation probabilities are counts: any disagreement would be >= 1 / n_tokens
    _assert_close(br.act_prob, ht.act_prob, atol=1e-4)
    # float32 noise grows with the residual norm (~400 at layer 29): compare at 1e-4 relative to each row's scale
    pairs = [(br.resid_mean, ht.resid_mean), (br.post_mean, ht.post_mean),
             *[(br.features[k], ht.features[k]) for k in kwargs["features"]]]
    for got, ref in pairs:
        assert got.shape == ref.shape
        scale = ref.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
        assert ((got - ref).abs() / scale).max().item() <= 1e-4


ARTIFACT_MISMATCH = [  # (field changed on the model, message naming both sides)
    ({"processing": "fold_ln"}, r"made with processing='none', but the model has processing='fold_ln'"),
    ({"dtype": "bfloat16"}, r"made with dtype='float32', but the model has dtype='bfloat16'"),
    ({"model_id": "other"}, r"made with model_id='tiny-0', but the model has model_id='other'"),
]


@pytest.mark.parametrize(("change", "message"), ARTIFACT_MISMATCH, ids=[next(iter(c)) for c, _ in ARTIFACT_MISMATCH])
def test_saved_statistics_refuse_a_model_with_other_processing_or_dtype(tiny_model, tmp_path, change, message):
    import types

    from mechvalue.core.errors import CorruptFileError
    from mechvalue.lm.collect import ActivationStats
    from mechvalue.lm.prompts import raw

    stats = collect(tiny_model, [raw("one two"), raw("three")], layers=[0], batch_size=2)
    path = stats.save(tmp_path / "s.safetensors")
    assert ActivationStats.load(path, model=tiny_model).n_examples == 2  # the same model: fine
    info = {**tiny_model.mechvalue_info, "dtype": "float32", **change}
    cfg = types.SimpleNamespace(**{k: getattr(tiny_model.cfg, k) for k in ("n_layers", "d_model", "d_mlp")},
                                dtype=getattr(torch, info.pop("dtype")))
    other = types.SimpleNamespace(cfg=cfg, mechvalue_info=info)
    with pytest.raises(CorruptFileError, match=message):
        ActivationStats.load(path, model=other)
