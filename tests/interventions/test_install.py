"""Intervention specs, positions, gates and installation, checked at the hook on a tiny random model.

Every spec is compared against the clean model's activation at its own hook (``run_with_cache``
records after the spec has run there), so the expected edit is computed by hand.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import no_hooks

from mechvalue.core.context import current_context
from mechvalue.core.errors import HookError, MechvalueError
from mechvalue.interventions.install import (
    AblateNeurons,
    ActivationGate,
    AddVector,
    Lambda,
    Patch,
    ProbePush,
    ProjectOut,
    RunContext,
    ScaleNeurons,
    SetNeurons,
    intervene,
    sweep,
)

iv = importlib.import_module("mechvalue.interventions.install")

ATOL = 1e-5
D = 32  # tiny model d_model
R1 = "blocks.1.hook_resid_post"
MLP1 = "blocks.1.mlp.hook_post"


@pytest.fixture(scope="module")
def tokens(tiny_model):
    return torch.randint(0, tiny_model.cfg.d_vocab, (3, 7), generator=torch.Generator().manual_seed(0))


def _cache(model, tokens, *specs, **kwargs):
    with torch.no_grad(), intervene(model, *specs, **kwargs):
        return model.run_with_cache(tokens)


def _vec(seed: int, n: int = D, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * scale




@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: run this module with one intra-op thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def clean(tiny_model, tokens):
    with torch.no_grad():
        return tiny_model.run_with_cache(tokens)


# ------------------------------------------------------------------ each spec at its hook


def test_add_vector_adds_alpha_v_at_its_hook_only(tiny_model, tokens, clean):
    v = _vec(1)
    logits, cache = _cache(tiny_model, tokens, AddVector(1, v, 2.5))
    torch.testing.assert_close(cache[R1] - clean[1][R1], (2.5 * v).expand(3, 7, D), atol=ATOL, rtol=0)
    # upstream of the edit nothing changes; the logits do
    assert torch.equal(cache["blocks.1.hook_resid_mid"], clean[1]["blocks.1.hook_resid_mid"])
    assert torch.equal(cache["blocks.0.hook_resid_post"], clean[1]["blocks.0.hook_resid_post"])
    assert not torch.allclose(logits, clean[0], atol=1e-3)


def test_add_vector_other_residual_hook(tiny_model, tokens, clean):
    v = _vec(2)
    _, cache = _cache(tiny_model, tokens, AddVector(2, v, -1.0, hook="hook_resid_pre"))
    # resid_pre of block 2 is resid_post of block 1 (same tensor value), edited only at the former
    torch.testing.assert_close(cache["blocks.2.hook_resid_pre"] - clean[1]["blocks.2.hook_resid_pre"],
                               (-v).expand(3, 7, D), atol=ATOL, rtol=0)
    assert torch.equal(cache[R1], clean[1][R1])


def test_add_vector_per_row_alpha(tiny_model, tokens, clean):
    v = _vec(3)
    alpha = torch.tensor([1.0, 0.0, -3.0])
    _, cache = _cache(tiny_model, tokens, AddVector(1, v, alpha))
    diff = cache[R1] - clean[1][R1]
    for r in range(3):
        torch.testing.assert_close(diff[r], (alpha[r] * v).expand(7, D), atol=ATOL, rtol=0)
    assert torch.equal(cache["ln_final.hook_normalized"][1], clean[1]["ln_final.hook_normalized"][1])


@pytest.mark.parametrize("factor", [3.0, [2.0, -1.0, 0.5]])
def test_scale_neurons_touches_only_those_neurons(tiny_model, tokens, clean, factor):
    idx = [4, 9, 30]
    _, cache = _cache(tiny_model, tokens, ScaleNeurons(1, idx, factor))
    got, ref = cache[MLP1], clean[1][MLP1]
    torch.testing.assert_close(got[..., idx], ref[..., idx] * torch.tensor(factor), atol=ATOL, rtol=0)
    others = [i for i in range(tiny_model.cfg.d_mlp) if i not in idx]
    assert torch.equal(got[..., others], ref[..., others])
    assert torch.equal(cache["blocks.1.mlp.hook_pre"], clean[1]["blocks.1.mlp.hook_pre"])


def test_ablate_neurons_zero_and_mean(tiny_model, tokens, clean):
    idx = [0, 5, 47]
    others = [i for i in range(tiny_model.cfg.d_mlp) if i not in idx]
    ref = clean[1][MLP1]
    _, cache = _cache(tiny_model, tokens, AblateNeurons(1, idx))
    assert torch.equal(cache[MLP1][..., idx], torch.zeros(3, 7, 3))
    assert torch.equal(cache[MLP1][..., others], ref[..., others])
    means = torch.tensor([0.25, -1.5, 2.0])
    _, cache = _cache(tiny_model, tokens, AblateNeurons(1, idx, "mean", means=means))
    assert torch.equal(cache[MLP1][..., idx], means.expand(3, 7, 3))
    assert torch.equal(cache[MLP1][..., others], ref[..., others])
    with pytest.raises(MechvalueError, match="needs means"):
        AblateNeurons(1, idx, "mean")
    with pytest.raises(MechvalueError, match="'zero' or 'mean'"):
        AblateNeurons(1, idx, "median")


def test_set_neurons(tiny_model, tokens, clean):
    _, cache = _cache(tiny_model, tokens, SetNeurons(1, [2, 3], [7.0, -7.0]), SetNeurons(0, [1], 0.5))
    assert torch.equal(cache[MLP1][..., [2, 3]], torch.tensor([7.0, -7.0]).expand(3, 7, 2))
    assert torch.equal(cache["blocks.0.mlp.hook_post"][..., 1], torch.full((3, 7), 0.5))
    assert not torch.equal(cache[MLP1][..., 4:], clean[1][MLP1][..., 4:])  # downstream of layer 0's edit
    assert torch.equal(cache["blocks.0.mlp.hook_post"][..., 2:], clean[1]["blocks.0.mlp.hook_post"][..., 2:])


def test_project_out_leaves_no_component(tiny_model, tokens, clean):
    d = _vec(4, scale=7.0)  # any norm
    u = d / d.norm()
    _, cache = _cache(tiny_model, tokens, ProjectOut(1, d))
    got, ref = cache[R1], clean[1][R1]
    assert (ref @ u).abs().min() > 1e-3  # there was something to remove
    torch.testing.assert_close(got @ u, torch.zeros(3, 7), atol=1e-4, rtol=0)
    torch.testing.assert_close(got, ref - (ref @ u)[..., None] * u, atol=ATOL, rtol=0)


def test_probe_push_residual_space(tiny_model, tokens, clean):
    w, b = _vec(5), 0.3
    ref = clean[1][R1]
    z_ref = ref @ w + b
    target = float(z_ref.median())  # about half the positions are already above
    _, cache = _cache(tiny_model, tokens, ProbePush(R1, w, b, target))
    got = cache[R1]
    low = z_ref < target
    assert 0 < int(low.sum()) < low.numel()
    torch.testing.assert_close((got @ w + b)[low], torch.full((int(low.sum()),), target), atol=1e-4, rtol=0)
    assert torch.equal(got[~low], ref[~low])  # z >= target: untouched when raising
    # minimal edit: along w, of length gap / |w|
    delta = (got - ref)[low]
    expected = (target - z_ref[low])[:, None] * w / (w @ w)
    torch.testing.assert_close(delta, expected, atol=1e-4, rtol=0)
    # lowering brings every position above the target down to it and leaves the rest
    _, cache = _cache(tiny_model, tokens, ProbePush(R1, w, b, target, direction="lower"))
    torch.testing.assert_close((cache[R1] @ w + b)[~low], torch.full((int((~low).sum()),), target),
                               atol=1e-4, rtol=0)
    assert torch.equal(cache[R1][low], ref[low])


def test_probe_push_neuron_space_standardized(tiny_model, tokens, clean):
    idx = [1, 6, 17, 40]
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    mean = torch.tensor([0.1, -0.2, 0.0, 0.3])
    scale = torch.tensor([0.5, 2.0, 1.5, 0.25])
    b, target = -0.2, 4.0
    ref = clean[1][MLP1]
    z_ref = ((ref[..., idx] - mean) / scale) @ w + b
    assert (z_ref < target).all()
    _, cache = _cache(tiny_model, tokens, ProbePush(MLP1, w, b, target, indices=idx, mean=mean, scale=scale))
    got = cache[MLP1]
    z = ((got[..., idx] - mean) / scale) @ w + b
    torch.testing.assert_close(z, torch.full((3, 7), target), atol=1e-4, rtol=0)
    others = [i for i in range(tiny_model.cfg.d_mlp) if i not in idx]
    assert torch.equal(got[..., others], ref[..., others])
    # the edit is along w / scale (the raw-space gradient of z)
    delta = got[..., idx] - ref[..., idx]
    raw_dir = w / scale
    torch.testing.assert_close(delta, (target - z_ref)[..., None] * raw_dir / (raw_dir @ raw_dir),
                               atol=1e-4, rtol=0)


def test_probe_push_rejects_bad_shapes_and_direction(tiny_model, tokens):
    with pytest.raises(MechvalueError, match="probe has 3 weights but selects 32"):
        _cache(tiny_model, tokens, ProbePush(R1, torch.ones(3)))
    with pytest.raises(MechvalueError, match="'raise' or 'lower'"):
        _cache(tiny_model, tokens, ProbePush(R1, torch.ones(D), direction="up"))


def test_patch_copies_source(tiny_model, tokens, clean):
    other = torch.randint(0, 1000, (3, 7), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        _, src_cache = tiny_model.run_with_cache(other)
    src = src_cache["blocks.0.hook_resid_post"]
    _, cache = _cache(tiny_model, tokens, Patch("blocks.0.hook_resid_post", src))
    assert torch.equal(cache["blocks.0.hook_resid_post"], src)
    # a [pos, d] source is broadcast over rows; explicit positions restrict the copy
    _, cache = _cache(tiny_model, tokens, Patch("blocks.0.hook_resid_post", src[1], positions=[2, 3]))
    got, ref = cache["blocks.0.hook_resid_post"], clean[1]["blocks.0.hook_resid_post"]
    assert torch.equal(got[:, 2:4], src[1, 2:4].expand(3, 2, D))
    assert torch.equal(got[:, [0, 1, 4, 5, 6]], ref[:, [0, 1, 4, 5, 6]])
    with pytest.raises(MechvalueError, match="does not cover positions 0..6"):
        _cache(tiny_model, tokens, Patch("blocks.0.hook_resid_post", src[:, :5]))


def test_lambda_gets_act_and_hook(tiny_model, tokens, clean):
    seen = []

    def fn(act, hook):
        seen.append(hook.name)
        return act * 2

    _, cache = _cache(tiny_model, tokens, Lambda(R1, fn, positions=[0]))
    assert seen == [R1]
    assert torch.equal(cache[R1][:, 0], clean[1][R1][:, 0] * 2)
    assert torch.equal(cache[R1][:, 1:], clean[1][R1][:, 1:])
    with pytest.raises(MechvalueError, match="must return a tensor of shape"):
        _cache(tiny_model, tokens, Lambda(R1, lambda act, hook: act[:, :1]))


# ------------------------------------------------------------------ positions


def test_explicit_positions_restrict_the_edit(tiny_model, tokens, clean):
    v = _vec(6)
    _, cache = _cache(tiny_model, tokens, AddVector(1, v, positions=[1, 4]))
    diff = cache[R1] - clean[1][R1]
    torch.testing.assert_close(diff[:, [1, 4]], v.expand(3, 2, D), atol=ATOL, rtol=0)
    assert torch.equal(diff[:, [0, 2, 3, 5, 6]], torch.zeros(3, 5, D))
    _, cache = _cache(tiny_model, tokens, AddVector(1, v, positions=torch.tensor([6])))
    diff = cache[R1] - clean[1][R1]
    assert torch.equal(diff[:, :6], torch.zeros(3, 6, D))
    torch.testing.assert_close(diff[:, 6], v.expand(3, D), atol=ATOL, rtol=0)


def test_positions_follow_the_context_with_left_padding(tiny_model, tokens, clean):
    """Row 0: 2 pad + 3 prompt + 2 generated; row 1: 0 pad + 5 prompt + 2 generated; row 2: 6 pad + 1 prompt."""
    attn = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1]])
    prompt = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1]]).bool()
    ctx = RunContext.from_batch(attn, prompt)
    assert ctx.pad_offset.tolist() == [2, 0, 6] and ctx.prompt_len.tolist() == [3, 5, 1]
    v = _vec(7)
    expected = {
        "all": attn.bool(),
        "prompt": prompt,
        "generated": attn.bool() & ~prompt,
        (0, 2): torch.tensor([[0, 0, 1, 0, 1, 0, 0], [1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]]).bool(),
    }
    for positions, mask in expected.items():
        pos = list(positions) if isinstance(positions, tuple) else positions
        _, cache = _cache(tiny_model, tokens, AddVector(1, v, positions=pos), context=ctx)
        changed = (cache[R1] - clean[1][R1]).abs().amax(-1) > 1e-4
        assert torch.equal(changed, mask), positions


def test_no_context_counts_every_position_as_prompt(tiny_model, tokens, clean):
    v = _vec(8)
    _, cache = _cache(tiny_model, tokens, AddVector(1, v, positions="prompt"))
    torch.testing.assert_close(cache[R1] - clean[1][R1], v.expand(3, 7, D), atol=ATOL, rtol=0)
    _, cache = _cache(tiny_model, tokens, AddVector(1, v, positions="generated"))
    assert torch.equal(cache[R1], clean[1][R1])


# ------------------------------------------------------------------ installation


def test_hooks_removed_after_the_block(tiny_model, tokens, clean):
    with torch.no_grad():
        with intervene(tiny_model, AddVector(1, _vec(9), 3.0), ScaleNeurons(0, [1, 2], 0.0)):
            assert not no_hooks(tiny_model)
            assert not torch.allclose(tiny_model(tokens), clean[0], atol=1e-3)
        assert no_hooks(tiny_model)
        assert torch.equal(tiny_model(tokens), clean[0])


def test_hooks_removed_when_the_block_raises(tiny_model, tokens, clean):
    ctx = RunContext(torch.zeros(3, dtype=torch.long), torch.full((3,), 4))
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="boom"):
            with intervene(tiny_model, AddVector(1, _vec(10), 3.0), context=ctx):
                assert current_context() is ctx
                raise RuntimeError("boom")
        assert no_hooks(tiny_model)
        assert current_context() is None
        assert torch.equal(tiny_model(tokens), clean[0])
        # an error raised by a spec inside the forward pass also cleans up
        with pytest.raises(MechvalueError, match="per-row alpha"):
            with intervene(tiny_model, AddVector(1, _vec(10), torch.ones(5))):
                tiny_model(tokens)
        assert no_hooks(tiny_model)
        assert torch.equal(tiny_model(tokens), clean[0])


def test_nesting_composes(tiny_model, tokens, clean):
    v1, v2 = _vec(11), _vec(12)
    with torch.no_grad(), intervene(tiny_model, AddVector(1, v1, 2.0)):
        with intervene(tiny_model, [AddVector(1, v2, -1.0)]):
            _, inner = tiny_model.run_with_cache(tokens)
        _, outer = tiny_model.run_with_cache(tokens)
    torch.testing.assert_close(inner[R1] - clean[1][R1], (2.0 * v1 - v2).expand(3, 7, D), atol=ATOL, rtol=0)
    torch.testing.assert_close(outer[R1] - clean[1][R1], (2.0 * v1).expand(3, 7, D), atol=ATOL, rtol=0)
    assert no_hooks(tiny_model)


def test_inner_specs_run_after_outer_ones(tiny_model, tokens, clean):
    v = _vec(13)
    with torch.no_grad(), intervene(tiny_model, AddVector(1, v, 1.0)):
        with intervene(tiny_model, ScaleNeurons(1, [0], 2.0, hook="hook_post"),
                       Lambda(R1, lambda act, hook: act * 3)):
            _, cache = tiny_model.run_with_cache(tokens)
    ref = clean[1][R1]
    _, scaled = _cache(tiny_model, tokens, ScaleNeurons(1, [0], 2.0))
    torch.testing.assert_close(cache[R1], (scaled[R1] + v) * 3, atol=1e-4, rtol=0)
    assert not torch.allclose(scaled[R1], ref)


def test_sweep_gives_copies(tiny_model):
    v = _vec(14)
    base = AddVector(1, v, 1.0, positions="prompt")
    specs = sweep(base, alpha=[0.0, 2.0, -4.0])
    assert [s.alpha for s in specs] == [0.0, 2.0, -4.0]
    assert all(s.vector is v and s.positions == "prompt" and s.layer == 1 for s in specs)
    assert base.alpha == 1.0 and all(s is not base for s in specs)
    layers = sweep(ScaleNeurons(0, [1], 0.0), layer=[0, 1, 2])
    assert [s.layer for s in layers] == [0, 1, 2] and {s.hook_name for s in layers} == {
        "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post", "blocks.2.mlp.hook_post"}
    with pytest.raises(MechvalueError, match="exactly one field"):
        sweep(base, alpha=[1], layer=[0])
    with pytest.raises(MechvalueError, match="no field 'beta'"):
        sweep(base, beta=[1])


# ------------------------------------------------------------------ errors


def test_bad_input_raises_clear_errors(tiny_model, tokens):
    def enter(*specs, **kwargs):
        with intervene(tiny_model, *specs, **kwargs):
            tiny_model(tokens)

    with pytest.raises(MechvalueError, match=r"vector shape \(31,\) does not match the model's d_model=32"):
        enter(AddVector(1, torch.ones(31)))
    with pytest.raises(MechvalueError, match="d_model=32"):
        enter(ProjectOut(0, torch.ones(D + 1)))
    with pytest.raises(HookError, match=r"out of range 0\.\.47: \[48\]"):
        enter(ScaleNeurons(0, [3, 48], 2.0))
    with pytest.raises(HookError, match=r"out of range 0\.\.47: \[-1\]"):
        enter(AblateNeurons(0, [-1]))
    with pytest.raises(HookError, match="no hook 'blocks.7.hook_resid_post'"):
        enter(AddVector(7, torch.ones(D)))
    with pytest.raises(HookError, match="did you mean"):
        enter(Lambda("blocks.1.hook_resid_pots", lambda a, h: a))
    with pytest.raises(MechvalueError, match="positions='last'"):
        enter(AddVector(1, torch.ones(D), positions="last"))
    with pytest.raises(MechvalueError, match=r"per-row alpha has shape \(2,\), expected \[3\]"):
        enter(AddVector(1, torch.ones(D), torch.ones(2)))
    with pytest.raises(MechvalueError, match="gate gives 2 rows but the batch has 3"):
        enter(AddVector(1, torch.ones(D), gate=torch.tensor([True, False])))
    with pytest.raises(HookError, match="gate on an earlier layer"):
        enter(AddVector(0, torch.ones(D), gate=ActivationGate("blocks.2.hook_resid_post", lambda a: a[:, 0] > 0)))
    with pytest.raises(MechvalueError, match="pass prompts="):
        enter(AddVector(1, torch.ones(D), gate=lambda prompts: [True] * len(prompts)))
    with pytest.raises(MechvalueError, match="not an intervention spec"):
        enter("blocks.0.hook_resid_post")
    assert no_hooks(tiny_model)


# ------------------------------------------------------------------ gates


def _steered_rows(model, tokens, spec, clean_logits, **kwargs):
    with torch.no_grad(), intervene(model, spec, **kwargs):
        logits = model(tokens)
    equal = [torch.equal(logits[r], clean_logits[r]) for r in range(tokens.shape[0])]
    return logits, [not e for e in equal]


def test_bool_gate_steers_only_chosen_rows(tiny_model, tokens, clean):
    v = _vec(15, scale=3.0)
    logits, steered = _steered_rows(tiny_model, tokens, AddVector(1, v, gate=torch.tensor([True, False, True])),
                                    clean[0])
    assert steered == [True, False, True]
    with torch.no_grad(), intervene(tiny_model, AddVector(1, v)):
        full = tiny_model(tokens)
    torch.testing.assert_close(logits[[0, 2]], full[[0, 2]], atol=1e-4, rtol=0)


def test_prompt_gate_per_row(tiny_model, tokens, clean):
    prompts = ["fresh bread", "a walk", "bread and butter"]
    calls = []

    def gate(ps):
        calls.append(list(ps))
        return ["bread" in p for p in ps]

    _, steered = _steered_rows(tiny_model, tokens, AddVector(1, _vec(16, scale=3.0), gate=gate), clean[0],
                               prompts=prompts)
    assert steered == [True, False, True]
    assert calls == [prompts]  # evaluated once per context


def test_activation_gate(tiny_model, tokens, clean):
    """The gate reads its hook at the last prompt token; rows where it fires are steered."""
    gate_hook = "blocks.0.hook_resid_post"
    last = clean[1][gate_hook][:, -1]
    thr = float(last[:, 0].median())
    want = (last[:, 0] > thr).tolist()
    assert any(want) and not all(want)
    seen = []

    def fn(act):
        seen.append(act.clone())
        return act[:, 0] > thr

    gate = ActivationGate(gate_hook, fn)
    spec = AddVector(1, _vec(17, scale=3.0), gate=gate)
    # a plain forward pass (no context): the last position is the last prompt token
    _, steered = _steered_rows(tiny_model, tokens, spec, clean[0])
    assert steered == want
    torch.testing.assert_close(seen[-1], last, atol=0, rtol=0)
    # prompts= without a context: the whole input is the prompt, as above
    _, steered = _steered_rows(tiny_model, tokens, spec, clean[0], prompts=["a", "b", "c"])
    assert steered == want
    # with a context: the last prompt token of each (left-padded) row
    prompt = torch.tensor([[1, 1, 1, 1, 1, 0, 0]] * 3).bool()
    ctx = RunContext.from_batch(torch.ones(3, 7, dtype=torch.long), prompt)
    seen.clear()
    _, steered = _steered_rows(tiny_model, tokens, spec, clean[0], context=ctx)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], clean[1][gate_hook][:, 4], atol=0, rtol=0)
    assert steered == (clean[1][gate_hook][:, 4, 0] > thr).tolist()
    # a gate at the same layer as the spec, at an earlier hook, is fine
    same = AddVector(1, _vec(17, scale=3.0), gate=ActivationGate("blocks.1.hook_resid_mid", lambda a: a[:, 0] > 0))
    _, steered = _steered_rows(tiny_model, tokens, same, clean[0])
    assert steered == (clean[1]["blocks.1.hook_resid_mid"][:, -1, 0] > 0).tolist()


def test_activation_gate_sees_earlier_edits(tiny_model, tokens, clean):
    """Specs at earlier hooks run before the gate reads its activation."""
    gate_hook = "blocks.1.hook_resid_post"
    big = torch.zeros(D)
    big[0] = 1e3
    gate = ActivationGate(gate_hook, lambda act: act[:, 0] > 500)
    _, steered = _steered_rows(tiny_model, tokens, [AddVector(0, big, gate=torch.tensor([False, True, False])),
                                                    AddVector(2, _vec(18), gate=gate)], clean[0])
    # row 1 is changed by both; rows 0 and 2 by neither
    assert steered == [False, True, False]
    with torch.no_grad(), intervene(tiny_model, AddVector(0, big, gate=torch.tensor([False, True, False]))):
        only_first = tiny_model(tokens)
    with torch.no_grad(), intervene(tiny_model, AddVector(0, big, gate=torch.tensor([False, True, False])),
                                    AddVector(2, _vec(18), gate=gate)):
        both = tiny_model(tokens)
    assert not torch.allclose(both[1], only_first[1], atol=1e-4)
