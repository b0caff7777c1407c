"""Model loading and steering setup shared by the CLI commands (``steer``, ``evaluate``, ``extract``).

:func:`steering` turns ``--method``/``--value``/``--vectors`` into interventions and a system prompt:
ConVA/CAA vectors (trained on the fly and cached under :func:`vectors_cache_path`), NeVA's fitted
probe pushes (cached beside them) or a value system prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from mechvalue.core.errors import CorruptFileError, MechvalueError


def load_model_from_args(args):
    from mechvalue.lm import models  # looked up at call time (tests replace models.load_model)

    return models.load_model(args.model, device=args.device, dtype=args.dtype)


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
        raise MechvalueError(f"{path} holds {vv.value} vectors, not {value}; pass --value {vv.value} or other vectors")
    return vv


def _value_vectors(args, model, value: str, given=None):
    from mechvalue.lm.models import model_info
    from mechvalue.methods.conva import ValueVectors, train_value_vectors

    if given is not None:
        if given.meta.get("model_id") != model_info(model).get("model_id"):
            raise CorruptFileError(f"{args.vectors}: vectors of {given.meta.get('model_id')!r}, not of this model")
        return given
    path = vectors_cache_path(model, value, args.cache_dir)
    if path.exists():
        try:
            return ValueVectors.load(path, model=model)
        except CorruptFileError as exc:
            print(f"mechvalue: {exc}; retraining", file=sys.stderr)
    print(f"training {value} probe vectors on every layer (cached at {path}) ...", file=sys.stderr)
    vv = train_value_vectors(model, value, batch_size=args.batch_size, seed=args.seed)
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
    path = vectors_cache_path(model, value, args.cache_dir).with_name(f"{value}.neva.safetensors")
    if not path.exists():
        from mechvalue.methods.neva import edit_specs, select_neurons, train_neuron_probes

        print(f"fitting NeVA neuron probes for all values (cached at {path}) ...", file=sys.stderr)
        probes = train_neuron_probes(model, batch_size=args.batch_size, seed=args.seed)
        specs = edit_specs(probes, select_neurons(probes)[value], p0=p0)
        tensors = {f"{s.hook}|{k}": torch.as_tensor(getattr(s, k)) for s in specs
                   for k in ("w", "indices", "mean", "scale")}
        save_tensors(path, tensors, {"kind": "NevaEdit", "value": value, "b": {s.hook: float(s.b) for s in specs}})
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
