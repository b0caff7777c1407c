"""Shared fixtures: the real offline model (session scope) and tiny random models.

jaxtyping's import hook checks every annotated shape of :mod:`mechvalue.analysis` and
:mod:`mechvalue.interventions` at run time (with beartype) for the whole test session: it is installed
here, before any test imports mechvalue.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jaxtyping import install_import_hook

_SHAPE_CHECKED = ("mechvalue.analysis", "mechvalue.interventions")
_shape_hook = install_import_hook(list(_SHAPE_CHECKED), "shape_checking.typechecker")

import pytest  # noqa: E402  (after the hook, so mechvalue is imported with it)
import torch  # noqa: E402

from mechvalue.lm.backends import hooked_available  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct from the offline GGUF, no weight processing."""
    from mechvalue.lm.models import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def tokenizer(smollm):
    return smollm.tokenizer


#: the backend tiny models are built on: "hooked" (TransformerLens 3's HookedTransformer) or "bridge"
#: (a tiny HF Llama wrapped as a TransformerBridge); the default is "bridge" where HookedTransformer is gone
TEST_BACKEND = os.environ.get("MECHVALUE_TEST_BACKEND") or ("hooked" if hooked_available() else "bridge")


def make_tiny_model(tokenizer, *, n_layers: int = 3, d_model: int = 32, d_mlp: int = 48, seed: int = 0,
                    gated: bool = True, backend: str | None = None):
    """A small random Llama-style model sharing the real tokenizer, on ``backend`` (default
    :data:`TEST_BACKEND`): a ``HookedTransformer``, or a tiny HF Llama of the same shape as a bridge."""
    backend = backend or TEST_BACKEND
    if backend == "bridge":
        return _tiny_bridge(tokenizer, n_layers, d_model, d_mlp, seed)
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, d_head=8, n_heads=4, n_key_value_heads=2, d_mlp=d_mlp,
        d_vocab=len(tokenizer), n_ctx=512, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=8, gated_mlp=gated, final_rms=True, seed=seed,
        model_name=f"tiny-{seed}", device="cpu",
    )
    torch.manual_seed(seed)
    model = HookedTransformer(cfg, tokenizer, move_to_device=False, default_padding_side="left")
    model.mechvalue_info = {"model_id": f"tiny-{seed}", "processing": "none"}
    return model.eval()


def _tiny_bridge(tokenizer, n_layers: int, d_model: int, d_mlp: int, seed: int):
    from transformers import AutoModelForCausalLM

    from mechvalue.lm.families import tiny_config
    from mechvalue.lm.models import load_model

    # HookedTransformer's default init std, 0.8 / sqrt(d_model): the same logit scale as the hooked tiny models
    folder = Path(tempfile.mkdtemp(prefix="mechvalue-tiny-"))
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(tiny_config("llama", tokenizer, n_layers=n_layers, d_model=d_model,
                                                 d_mlp=d_mlp, init_range=0.8 / d_model ** 0.5)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model = load_model(folder, device="cpu", backend="bridge")
    model.mechvalue_info = {**model.mechvalue_info, "model_id": f"tiny-{seed}", "processing": "none"}
    return model


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"public data not found at {SHARED_DATA}")
    return SHARED_DATA


def no_hooks(model) -> bool:
    """True when no forward or backward hook is left on any hook point."""
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tiny-tensor tests (oversubscription on shared CPUs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)




@pytest.fixture
def unchecked_shapes():
    """For bad-input tests: turn the shape hook off so the test sees the error a user gets (users run
    without the hook, so the public functions' own validation is what they meet)."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


# ---------------------------------------------------------------- command-line tests (tests/cli)

@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a command loads a model before checking its input."""
    import mechvalue.lm.models

    def boom(*a, **k):
        raise AssertionError("the model should not load before the input is checked")
    monkeypatch.setattr(mechvalue.lm.models, "load_model", boom)


@pytest.fixture(scope="module")
def tiny8(tokenizer):
    """Eight layers: room for ConVA's rule (the last five layers are never steered)."""
    return make_tiny_model(tokenizer, n_layers=8, d_model=32, d_mlp=48, seed=2)


@pytest.fixture
def tiny(monkeypatch, tiny8, tmp_path):
    """Every command's ``load_model`` returns the tiny model; caches go to a temporary folder."""
    import mechvalue.lm.models

    monkeypatch.setattr(mechvalue.lm.models, "load_model", lambda *a, **k: tiny8)
    monkeypatch.setenv("MECHVALUE_CACHE", str(tmp_path / "cache"))
    return tiny8
