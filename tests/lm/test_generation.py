"""Batched generation and scoring under interventions (tiny random model), plus one real-model steering check."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model, no_hooks

from mechvalue.core.errors import MechvalueError
from mechvalue.data.bundled import load_dilemmas, load_pairs
from mechvalue.interventions.install import (
    ActivationGate,
    AddVector,
    Lambda,
    RunContext,
    ScaleNeurons,
    intervene,
)
from mechvalue.lm.collect import collect
from mechvalue.lm.generation import generate, score
from mechvalue.lm.prompts import chat, prompt_text, raw

D = 32
# Mixed lengths, deliberately not sorted by length (generate sorts and re-batches internally).
PROMPTS = [
    "Tell me about bread, butter and the long history of baking in France and Italy.",
    "Hi.",
    "Should I help my neighbour move this weekend?",
    "Why?",
    "Give me a bread recipe.",
]
N_NEW = 6


def _vec(seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(D, generator=torch.Generator().manual_seed(seed)) * scale


def _prompt_ids(tokenizer, example) -> list[int]:
    """Prompt token ids: the template (which starts with BOS = <|im_start|>), or BOS + raw text (mechvalue
    prepends SmolLM2's BOS whether or not the installed tokenizer adds it)."""
    ids = tokenizer(prompt_text(tokenizer, example), add_special_tokens=False)["input_ids"]
    return ids if ids[0] == tokenizer.bos_token_id else [tokenizer.bos_token_id, *ids]


def _sequential(model, prompts, specs=(), **kwargs) -> list[list[int]]:
    return [generate(model, [p], specs, max_new_tokens=N_NEW, **kwargs).tokens[0] for p in prompts]




@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: run this module with one intra-op thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def steer_vec():
    return _vec(1, scale=4.0)


@pytest.fixture(scope="module")
def clean_seq(tiny_model):
    return _sequential(tiny_model, PROMPTS)


@pytest.fixture(scope="module")
def steered_seq(tiny_model, steer_vec):
    return _sequential(tiny_model, PROMPTS, AddVector(1, steer_vec))


# ------------------------------------------------------------------ batched == sequential


def _specs(v):
    return {
        "none": (),
        "add": AddVector(1, v),
        "add-prompt": AddVector(1, v, positions="prompt"),
        "add-generated": AddVector(0, v, positions="generated"),
        "add-explicit": AddVector(1, v, positions=[0, 3, 4]),
        "scale": ScaleNeurons(1, list(range(0, 48, 2)), 4.0),
        "both": [AddVector(0, v, 0.5), ScaleNeurons(2, [1, 2, 3], -3.0)],
    }


@pytest.mark.parametrize("name", list(_specs(torch.zeros(D))))
@pytest.mark.parametrize("batch_size", [16, 2])
def test_batched_greedy_equals_sequential(tiny_model, steer_vec, clean_seq, name, batch_size):
    spec = _specs(steer_vec)[name]
    seq = clean_seq if name == "none" else _sequential(tiny_model, PROMPTS, spec)
    if name != "none":
        assert seq != clean_seq  # the intervention matters
    batched = generate(tiny_model, PROMPTS, spec, max_new_tokens=N_NEW, batch_size=batch_size)
    assert batched.tokens == seq
    assert all(len(t) == N_NEW for t in batched.tokens)
    assert batched.texts == [tiny_model.tokenizer.decode(t) for t in seq]
    assert no_hooks(tiny_model)


GATES = {
    "tensor": torch.tensor([True, False, False, True, False]),
    "prompt": lambda prompts: ["bread" in p for p in prompts],
}


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("batch_size", [16, 2])
def test_gated_rows_steered_others_clean(tiny_model, steer_vec, clean_seq, steered_seq, gate, batch_size):
    fires = {"tensor": [True, False, False, True, False], "prompt": [True, False, False, False, True]}[gate]
    out = generate(tiny_model, PROMPTS, AddVector(1, steer_vec, gate=GATES[gate]), max_new_tokens=N_NEW,
                   batch_size=batch_size)
    for r, f in enumerate(fires):
        assert steered_seq[r] != clean_seq[r]
        assert out.tokens[r] == (steered_seq[r] if f else clean_seq[r]), r


def test_per_row_alpha_follows_input_order(tiny_model, steer_vec, clean_seq, steered_seq):
    alpha = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    for batch_size in (16, 2):
        out = generate(tiny_model, PROMPTS, AddVector(1, steer_vec, alpha), max_new_tokens=N_NEW,
                       batch_size=batch_size)
        assert out.tokens == [s if a else c for a, s, c in zip(alpha.tolist(), steered_seq, clean_seq)]
    with pytest.raises(MechvalueError, match=r"per-row alpha has shape \(3,\), expected \[5\]: one per prompt"):
        generate(tiny_model, PROMPTS, AddVector(1, steer_vec, torch.ones(3)), max_new_tokens=2)
    with pytest.raises(MechvalueError, match=r"gate has shape \(2,\), expected \[5\]: one per prompt"):
        generate(tiny_model, PROMPTS, AddVector(1, steer_vec, gate=[True, False]), max_new_tokens=2)
    # a list of per-row alphas works like a tensor; the caller's spec is left as it was
    spec = AddVector(1, steer_vec, [0.0, 1.0, 0.0, 1.0, 1.0])
    assert generate(tiny_model, PROMPTS, spec, max_new_tokens=N_NEW, batch_size=2).tokens == out.tokens
    assert spec.alpha == [0.0, 1.0, 0.0, 1.0, 1.0]


def test_activation_gate_in_generation(tiny_model, steer_vec, clean_seq, steered_seq):
    """The gate is read once, at each row's last prompt token (left padding accounted for)."""
    gate_hook = "blocks.0.hook_resid_post"
    last = []
    for p in PROMPTS:
        ids = _prompt_ids(tiny_model.tokenizer, chat(p))
        with torch.no_grad():
            _, cache = tiny_model.run_with_cache(torch.tensor([ids]), names_filter=gate_hook)
        last.append(cache[gate_hook][0, -1])
    last = torch.stack(last)
    srt = last[:, 3].sort().values
    thr = float(srt[2] + srt[3]) / 2  # midway between two rows: robust to padding noise
    fires = (last[:, 3] > thr).tolist()
    assert any(fires) and not all(fires)
    calls = []

    def fn(act):
        calls.append(act.shape[0])
        return act[:, 3] > thr

    out = generate(tiny_model, PROMPTS, AddVector(1, steer_vec, gate=ActivationGate(gate_hook, fn)),
                   max_new_tokens=N_NEW, batch_size=2)
    assert calls == [2, 2, 1]  # once per batch, on the prompt pass only
    assert out.tokens == [s if f else c for f, s, c in zip(fires, steered_seq, clean_seq)]


# ------------------------------------------------------------------ first token, KV cache, positions


def test_first_generated_token_is_steered(tiny_model, tokenizer):
    v = _vec(2, scale=6.0)
    ids = torch.tensor([_prompt_ids(tokenizer, chat(PROMPTS[0]))])
    with torch.no_grad():
        clean_next = int(tiny_model(ids)[0, -1].argmax())
        hooked = tiny_model.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_resid_post", lambda a, hook: a + 2.0 * v)])
    manual_next = int(hooked[0, -1].argmax())
    assert manual_next != clean_next
    out = generate(tiny_model, PROMPTS[0], AddVector(1, v, 2.0), max_new_tokens=1)
    assert out.tokens == [[manual_next]]
    assert generate(tiny_model, PROMPTS[0], max_new_tokens=1).tokens == [[clean_next]]


def _no_cache_greedy(model, prompt: str, spec, n: int, positions_context: bool) -> list[int]:
    """Reference: re-run the full sequence every step under ``intervene`` (no KV cache)."""
    ids = _prompt_ids(model.tokenizer, chat(prompt))
    n_prompt = len(ids)
    out = []
    for _ in range(n):
        ctx = RunContext(torch.zeros(1, dtype=torch.long), torch.tensor([n_prompt])) if positions_context else None
        with torch.no_grad(), intervene(model, spec, context=ctx):
            logits = model(torch.tensor([ids]))
        nxt = int(logits[0, -1].argmax())
        ids.append(nxt)
        out.append(nxt)
    return out


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", [1, 2, 34, 49]])
def test_kv_cache_generation_equals_no_cache(tiny_model, steer_vec, clean_seq, positions):
    spec = AddVector(1, steer_vec, positions=positions)
    for r in (0, 1):
        ref = _no_cache_greedy(tiny_model, PROMPTS[r], spec, N_NEW, positions_context=True)
        assert ref != clean_seq[r]
        assert generate(tiny_model, PROMPTS[r], spec, max_new_tokens=N_NEW).tokens[0] == ref
    # and batched, with left padding
    refs = [_no_cache_greedy(tiny_model, p, spec, N_NEW, positions_context=True) for p in PROMPTS[:3]]
    assert generate(tiny_model, PROMPTS[:3], spec, max_new_tokens=N_NEW).tokens == refs


def test_positions_generated_vs_prompt(tiny_model, steer_vec, clean_seq, steered_seq):
    ids = _prompt_ids(tiny_model.tokenizer, chat(PROMPTS[0]))
    n_prompt = len(ids)
    # "generated": the first token is predicted from the (untouched) prompt; later ones are steered
    gen = generate(tiny_model, PROMPTS[0], AddVector(1, steer_vec, positions="generated"), max_new_tokens=N_NEW)
    assert gen.tokens[0][0] == clean_seq[0][0] and gen.tokens[0] != clean_seq[0]
    # "prompt": the first token is steered like "all"; generated positions are read clean, so
    # the continuation equals a no-cache run steering exactly the prompt's positions
    prm = generate(tiny_model, PROMPTS[0], AddVector(1, steer_vec, positions="prompt"), max_new_tokens=N_NEW)
    assert prm.tokens[0][0] == steered_seq[0][0] != clean_seq[0][0]
    explicit = AddVector(1, steer_vec, positions=list(range(n_prompt)))
    assert prm.tokens[0] == _no_cache_greedy(tiny_model, PROMPTS[0], explicit, N_NEW, positions_context=False)
    assert prm.tokens[0] != steered_seq[0]

    # what a Lambda sees: [rows, positions] of each call that had something selected
    def recorder(log):
        def fn(act, hook):
            log.append(tuple(act.shape[:2]))
            return act
        return fn

    for positions, expected in [("prompt", None), ("generated", [(2, 1)] * (N_NEW - 1))]:
        log = []
        generate(tiny_model, PROMPTS[:2], Lambda("blocks.0.hook_resid_post", recorder(log), positions=positions),
                 max_new_tokens=N_NEW)
        if expected is None:  # only the prompt pass (one call, padded width)
            width = max(len(_prompt_ids(tiny_model.tokenizer, chat(p))) for p in PROMPTS[:2])
            assert log == [(2, width)]
        else:
            assert log == expected


def test_prompt_positions_skip_left_padding(tiny_model):
    """A Lambda with positions='prompt' edits the real prompt tokens of each row and never the padding."""
    seen = []

    def fn(act, hook):
        seen.append(act.clone())
        return act + 1.0

    def after(act, hook):
        seen.append(act.clone())
        return act

    generate(tiny_model, PROMPTS[:2], [Lambda("blocks.0.hook_resid_post", fn, positions="prompt"),
                                       Lambda("blocks.0.hook_resid_post", after)], max_new_tokens=1)
    before, edited = seen[0], seen[1]
    lens = [len(_prompt_ids(tiny_model.tokenizer, chat(p))) for p in PROMPTS[:2]]
    width = max(lens)
    changed = (edited - before).abs().amax(-1) > 0.5
    # generate sorts by prompt length: row 0 is "Hi." (PROMPTS[1]), row 1 the long prompt
    expected = torch.zeros(2, width, dtype=torch.bool)
    for row, n in enumerate(sorted(lens)):
        expected[row, width - n:] = True
    assert torch.equal(changed, expected)


# ------------------------------------------------------------------ sampling, stop strings, EOS


def test_sampling_is_deterministic_per_seed(tiny_model):
    kw = dict(max_new_tokens=5, temperature=1.0)
    a = generate(tiny_model, PROMPTS[:2], seed=3, **kw)
    b = generate(tiny_model, PROMPTS[:2], seed=3, **kw)
    assert a.tokens == b.tokens and a.texts == b.texts
    outs = {tuple(generate(tiny_model, PROMPTS[1], seed=s, **kw).tokens[0]) for s in range(4)}
    assert len(outs) >= 2
    greedy = generate(tiny_model, PROMPTS[1], max_new_tokens=5).tokens[0]
    assert any(list(o) != greedy for o in outs)
    # top_p close to 0 keeps only the most likely token: greedy
    assert generate(tiny_model, PROMPTS[1], temperature=1.0, top_p=1e-6, seed=5, max_new_tokens=5).tokens[0] == greedy
    with_lp = generate(tiny_model, PROMPTS[1], seed=3, return_logprobs=True, **kw)
    assert len(with_lp.logprobs[0]) == 5 and all(lp <= 0 for lp in with_lp.logprobs[0])


def test_logprobs_match_a_manual_forward(tiny_model):
    out = generate(tiny_model, PROMPTS[1], max_new_tokens=4, return_logprobs=True)
    ids = _prompt_ids(tiny_model.tokenizer, chat(PROMPTS[1]))
    n = len(ids)
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(torch.tensor([ids + out.tokens[0]]))[0], -1)
    manual = [float(logp[n - 1 + k, t]) for k, t in enumerate(out.tokens[0])]
    assert out.logprobs[0] == pytest.approx(manual, abs=1e-4)


def test_stop_strings_cut_text(tiny_model, tokenizer):
    full = generate(tiny_model, PROMPTS[0], max_new_tokens=N_NEW)
    text, toks = full.texts[0], full.tokens[0]
    stop = tokenizer.decode(toks[3])
    assert stop and stop in text
    cut = generate(tiny_model, PROMPTS[0], max_new_tokens=N_NEW, stop=[stop])
    assert cut.texts[0] == text[:text.index(stop)]
    assert cut.tokens[0] == toks[:len(cut.tokens[0])] and len(cut.tokens[0]) <= 4
    # several stop strings: the earliest occurrence wins, whatever the list order
    two = generate(tiny_model, PROMPTS[0], max_new_tokens=N_NEW, stop=[stop, tokenizer.decode(toks[1])])
    assert two.texts[0] == text[:min(text.index(stop), text.index(tokenizer.decode(toks[1])))]


def test_eos_ends_a_row(tiny_model, tokenizer, clean_seq):
    """A huge push along EOS's unembedding on row 0 only: that row stops at once, the other runs on."""
    eos = tokenizer.eos_token_id
    push = tiny_model.W_U[:, eos].detach() * 1e3
    last = tiny_model.cfg.n_layers - 1
    out = generate(tiny_model, PROMPTS[:2], AddVector(last, push, gate=torch.tensor([True, False])),
                   max_new_tokens=N_NEW)
    assert out.tokens[0] == [eos] and out.texts[0] == ""
    assert out.tokens[1] == clean_seq[1]


def test_generate_rejects_bad_input(tiny_model):
    with pytest.raises(MechvalueError, match="max_new_tokens"):
        generate(tiny_model, "hi", max_new_tokens=0)
    with pytest.raises(MechvalueError, match="no prompts"):
        generate(tiny_model, [])


# ------------------------------------------------------------------ score


SCORE_PROMPTS = [chat("What should I cook tonight?"), raw("The committee met on a rainy Tuesday"),
                 chat("Plan a trip.", system="Be brief.")]
SCORE_CONTS = [["A lentil soup.", "Pizza, obviously!"], ["and agreed on cuts.", "to argue."],
               ["Go to Lisbon.", "Stay home and read a very long book."]]


def _manual_score(model, example, cont, vec=None, from_pos: int = 0):
    """Sum of log P(continuation tokens | prompt) from one unpadded forward pass."""
    tok = model.tokenizer
    p = _prompt_ids(tok, example)
    c = tok((" " + cont) if example.raw else cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        if vec is None:
            logits = model(ids)
        else:
            def add(act, hook):
                act = act.clone()
                act[:, from_pos:] += vec
                return act
            logits = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_resid_post", add)])
    logp = torch.log_softmax(logits[0].float(), -1)
    return sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c)), len(c)


def test_score_matches_manual_logprobs(tiny_model):
    got = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS)
    mean = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, reduce="mean")
    assert got.shape == (3, 2)
    for i, (ex, conts) in enumerate(zip(SCORE_PROMPTS, SCORE_CONTS)):
        for j, c in enumerate(conts):
            total, n = _manual_score(tiny_model, ex, c)
            assert float(got[i, j]) == pytest.approx(total, abs=1e-3)
            assert float(mean[i, j]) == pytest.approx(total / n, abs=1e-4)


def test_score_batched_equals_unbatched(tiny_model):
    batched = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, batch_size=16)
    single = torch.cat([score(tiny_model, [p], [c], batch_size=1) for p, c in zip(SCORE_PROMPTS, SCORE_CONTS)])
    torch.testing.assert_close(batched, single, atol=1e-3, rtol=0)
    torch.testing.assert_close(score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, batch_size=4), single,
                               atol=1e-3, rtol=0)
    # plain strings are user turns
    torch.testing.assert_close(score(tiny_model, ["What should I cook tonight?"], [SCORE_CONTS[0]]), single[:1],
                               atol=1e-4, rtol=0)


def test_score_under_interventions(tiny_model, tokenizer):
    v = _vec(3, scale=2.0)
    clean = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS)
    steered = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, AddVector(1, v))
    assert (steered - clean).abs().min() > 1e-2
    gen_only = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, AddVector(1, v, positions="generated"))
    for i, (ex, conts) in enumerate(zip(SCORE_PROMPTS, SCORE_CONTS)):
        n_prompt = len(_prompt_ids(tokenizer, ex))
        for j, c in enumerate(conts):
            assert float(steered[i, j]) == pytest.approx(_manual_score(tiny_model, ex, c, vec=v)[0], abs=1e-3)
            # candidate tokens count as generated positions
            manual = _manual_score(tiny_model, ex, c, vec=v, from_pos=n_prompt)[0]
            assert float(gen_only[i, j]) == pytest.approx(manual, abs=1e-3)
    # gates and per-row alphas are per prompt (every candidate of a prompt alike)
    gated = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, AddVector(1, v, gate=torch.tensor([False, True, False])),
                  batch_size=4)
    torch.testing.assert_close(gated[[0, 2]], clean[[0, 2]], atol=1e-4, rtol=0)
    torch.testing.assert_close(gated[1], steered[1], atol=1e-4, rtol=0)
    per_row = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, AddVector(1, v, torch.tensor([1.0, 0.0, 1.0])),
                    batch_size=4)
    torch.testing.assert_close(per_row[[0, 2]], steered[[0, 2]], atol=1e-4, rtol=0)
    torch.testing.assert_close(per_row[1], clean[1], atol=1e-4, rtol=0)
    bread = score(tiny_model, SCORE_PROMPTS, SCORE_CONTS, AddVector(1, v, gate=lambda ps: ["trip" in p for p in ps]))
    torch.testing.assert_close(bread[:2], clean[:2], atol=1e-4, rtol=0)
    torch.testing.assert_close(bread[2], steered[2], atol=1e-4, rtol=0)


def test_score_rejects_bad_input(tiny_model):
    with pytest.raises(MechvalueError, match="2 prompts but 1 lists"):
        score(tiny_model, ["a", "b"], [["x"]])
    with pytest.raises(MechvalueError, match="same number"):
        score(tiny_model, ["a", "b"], [["x"], ["y", "z"]])
    with pytest.raises(MechvalueError, match="reduce"):
        score(tiny_model, ["a"], [["x"]], reduce="max")


def test_tiny_model_unchanged(tiny_model, tokenizer):
    """No test above left hooks behind or changed the shared tiny model's weights."""
    assert no_hooks(tiny_model)
    fresh = make_tiny_model(tokenizer)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(tiny_model(ids), fresh(ids))


# ------------------------------------------------------------------ real model


STEER_LAYER = 18  # of 30; see the docstring below for why not 12
STEER_SCALE = 0.3  # alpha * |v| as a share of the median residual norm at the layer (about 60 of 196)


@pytest.mark.model
def test_benevolence_vector_moves_dilemma_preference(smollm):
    """Difference-in-means of 20 benevolence train pairs (raw text, last token) steers dilemma answers.

    With alpha in [-a, 0, +a], the mean preference ``log P(value_answer) - log P(conflict_answer)``
    over 8 bundled dilemmas rises with alpha. Measured on SmolLM2-135M-Instruct: at layer 12 the
    first-order effect of this vector on the preference is about zero (0.01 nats per unit of
    |alpha v|, positive for 57% of the 35 dilemmas) and at |alpha v| = 40-100 (0.3-0.7x the
    residual norm) the result is not monotone: the perturbation lowers both answers. At layers
    16-20 the first-order effect is positive for 71-91% of the dilemmas, and the mean preference
    is monotone on three disjoint sets of 8 dilemmas at |alpha v| = 30 and 60 (0.15x and 0.3x the
    residual norm at layer 18).
    """
    hook = f"blocks.{STEER_LAYER}.hook_resid_post"
    pairs = load_pairs("benevolence", split="train")[:20]
    kw = dict(layers=[STEER_LAYER], span="last", mlp=False, progress=False, features=[hook])
    pos = collect(smollm, [raw(p.positive) for p in pairs], **kw)
    neg = collect(smollm, [raw(p.negative) for p in pairs], **kw)
    v = pos.resid_mean[0] - neg.resid_mean[0]
    resid_norm = torch.cat([pos.features[hook], neg.features[hook]]).norm(dim=-1).median()
    a = float(STEER_SCALE * resid_norm / v.norm())
    assert 0 < a * float(v.norm()) < resid_norm

    dilemmas = load_dilemmas("benevolence")[:8]
    prompts = [d.question for d in dilemmas]
    answers = [[d.value_answer, d.conflict_answer] for d in dilemmas]
    prefs = []
    for alpha in (-a, 0.0, a):
        specs = AddVector(STEER_LAYER, v, alpha) if alpha else ()
        lp = score(smollm, prompts, answers, specs)
        prefs.append(float((lp[:, 0] - lp[:, 1]).mean()))
    assert no_hooks(smollm)
    # measured: about -14.9, -10.0, -6.6 (margins of 3-5 nats)
    assert prefs[0] + 1.0 < prefs[1] < prefs[2] - 1.0, prefs
