"""Model loading and steering setup shared by the CLI commands (``steer``, ``evaluate``, ``extract``).

:func:`steering` turns ``--method``/``--value``/``--vectors`` into interventions and a system prompt:
ConVA/CAA vectors (trained on the fly and cached under :func:`vectors_cache_path`), NeVA's fitted
probe pushes (cached beside them) or a value system prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from mechvalue.cli.progress import about, forward_progress, say, status
from mechvalue.core.errors import CorruptFileError, MechvalueError, UsageError


def load_model_from_args(args):
    from mechvalue.lm import models  # looked up at call time (tests replace models.load_model)

    name = args.model or "SmolLM2-135M-Instruct (offline)"
    with status(f"loading {name}", done=f"loaded {name}"):
        return models.load_model(args.model, device=args.device, dtype=args.dtype,
                                 backend=getattr(args, "backend", "auto"), n_devices=getattr(args, "n_devices", 1) or 1)


def estimate_seconds(model, texts: list[str], batch_size: int, template: str = "raw") -> float | None:
    """Seconds to read ``texts`` in batches, from timing one batch of them (an estimate for the user; None if
    the model cannot be timed this way)."""
    import math
    import time

    import torch

    from mechvalue.lm.prompts import chat, raw, tokenize

    if not texts:
        return 0.0
    step = max(1, len(texts) // batch_size)
    sample = [(raw if template == "raw" else chat)(t) for t in texts[::step][:batch_size]]
    batch = tokenize(model.tokenizer, sample, span="last", skip_special=False, max_length=256)
    device = next(model.parameters()).device
    tokens, mask = batch.tokens.to(device), batch.attention_mask.to(device)
    try:
        with torch.inference_mode():
            model(tokens[:2], attention_mask=mask[:2], return_type=None)  # warm-up: the first call is slower
            t = time.perf_counter()
            model(tokens, attention_mask=mask, return_type=None)
    except Exception:  # noqa: BLE001 - only an estimate: a model with another forward signature gets none
        return None
    return (time.perf_counter() - t) * math.ceil(len(texts) / batch_size)


def train_vectors(args, model, value: str, path: Path | None = None, *, template: str = "raw",
                  threshold: float = 0.9, pairs=None):
    """Train ``value``'s ConVA probe vectors with a progress bar (and, given ``path``, say first where they
    will be cached and about how long it takes)."""
    from mechvalue.data.bundled import load_pairs
    from mechvalue.methods.conva import pair_texts, train_value_vectors

    pairs = list(pairs) if pairs is not None else load_pairs(value)
    texts = pair_texts(pairs)[0]
    if path is not None:
        est = estimate_seconds(model, texts, args.batch_size, template)
        say(f"training {value} probe vectors once: {len(texts)} texts through the model and a probe per layer "
            f"({about(est)}); cached at {path}, later runs reuse them")
    with forward_progress(model, len(texts), f"training {value} vectors", then="fitting a probe per layer"):
        return train_value_vectors(model, value, pairs, template=template, threshold=threshold,
                                   batch_size=args.batch_size, seed=args.seed)


def vectors_cache_path(model, value: str, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/vectors/<model id>-<processing hash>/<value>.safetensors``."""
    from mechvalue.lm.models import default_cache_dir, model_info

    info = model_info(model)
    tag = hashlib.sha256(json.dumps(info.get("processing"), sort_keys=True, default=str).encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(info.get("model_id")))
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "vectors"
    return root / f"{slug}-{tag}" / f"{value}.safetensors"


def read_vectors(path: str | None, value: str):
    """ValueVectors from ``--vectors`` (checked before the model loads), or None."""
    if path is None:
        return None
    from mechvalue.methods.conva import ValueVectors

    vv = ValueVectors.load(path)
    if vv.value != value:
        raise UsageError(f"{path} holds {vv.value} vectors, not {value}; pass --value {vv.value} or other vectors")
    return vv


def _value_vectors(args, model, value: str, given=None):
    from mechvalue.lm.models import check_artifact_model
    from mechvalue.methods.conva import ValueVectors

    if given is not None:
        check_artifact_model(given.meta, model, f"{args.vectors}")
        return given
    path = vectors_cache_path(model, value, args.cache_dir)
    if path.exists():
        try:
            vv = ValueVectors.load(path, model=model)
            say(f"reusing the {value} probe vectors cached at {path}")
            return vv
        except CorruptFileError as exc:
            say(f"mechvalue: {exc}; retraining")
    vv = train_vectors(args, model, value, path)
    vv.save(path)
    return vv


def _neva_specs(args, model, value: str) -> list:
    """NeVA's probe-push edits of ``value``'s neurons; the fitted edits are cached (fitting takes minutes)."""
    import math

    import torch

    from mechvalue.core.artifacts import load_tensors, save_tensors
    from mechvalue.interventions.install import ProbePush

    p0 = args.p0 or 0.9
    if not 0 < p0 < 1:
        raise MechvalueError(f"--p0 must be in (0, 1), got {p0}")

    def edit_path(v: str) -> Path:
        return vectors_cache_path(model, v, args.cache_dir).with_name(f"{v}.neva.safetensors")

    path = edit_path(value)
    if path.exists():
        say(f"reusing the NeVA edit of {value} cached at {path}")
    else:
        from mechvalue.core.values import canonical_list
        from mechvalue.data.bundled import load_pairs
        from mechvalue.methods import neva

        texts = [t for v in canonical_list(None) for p in load_pairs(v) for t in (p.positive, p.negative)]
        est = estimate_seconds(model, texts, args.batch_size)
        say(f"fitting NeVA neuron probes once for all values: {len(texts)} texts through the model ({about(est)}), "
            f"then sparse probes per value and layer; the edits are cached in {path.parent}, later runs "
            "reuse them")
        with forward_progress(model, len(texts), "fitting NeVA neuron probes", then="fitting sparse probes"):
            probes = neva.train_neuron_probes(model, batch_size=args.batch_size, seed=args.seed, progress=False)
        for v, neurons in neva.select_neurons(probes).items():  # every value's edit: the probes cover them all
            specs = neva.edit_specs(probes, neurons, p0=p0)
            tensors = {f"{s.hook}|{k}": torch.as_tensor(getattr(s, k)) for s in specs
                       for k in ("w", "indices", "mean", "scale")}
            save_tensors(edit_path(v), tensors, {"kind": "NevaEdit", "value": v,
                                                 "b": {s.hook: float(s.b) for s in specs}})
        if not path.exists():
            raise MechvalueError(f"NeVA selected no neurons for {value}; try another --method")
    t, meta = load_tensors(path, kind="NevaEdit")
    target = math.log(p0 / (1 - p0))
    return [ProbePush(hook, t[f"{hook}|w"], b, target, indices=t[f"{hook}|indices"], mean=t[f"{hook}|mean"],
                      scale=t[f"{hook}|scale"]) for hook, b in meta["b"].items()]


def steering(args, model, value: str, given=None) -> tuple[list, str | None]:
    """(interventions, system prompt) for ``args.method`` (a command-line name in
    :data:`mechvalue.methods.registry.CLI_METHODS`), built by the registry from what that method needs."""
    from mechvalue.methods.registry import SteeringInputs, cli_method

    chosen = cli_method(args.method)
    inputs: dict = {}
    if "system_prompt" in chosen.needs:
        from mechvalue.data.bundled import load_system_prompts

        prompts = load_system_prompts(value)
        inputs["system_prompt"] = prompts[args.seed % len(prompts)].text
    if "neva" in chosen.needs:
        inputs["neva"] = tuple(_neva_specs(args, model, value))
    if "vectors" in chosen.needs:
        vv = _value_vectors(args, model, value, given)
        layers = args.layers or vv.selected
        if not layers:
            raise MechvalueError(f"{value}: no layer's probe accuracy exceeds the threshold; pass --layers, e.g. "
                                 f"--layers {model.cfg.n_layers // 2}")
        bad = [la for la in layers if la not in vv.layers]
        if bad:
            raise MechvalueError(f"--layers {bad} not probed; the vectors cover layers {vv.layers}")
        inputs.update(vectors=vv, layers=tuple(layers), p0=args.p0, caa_coefficient=args.coefficient)
    specs, system = chosen.build(SteeringInputs(value, **inputs))
    return list(specs), system
