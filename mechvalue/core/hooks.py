"""Hook-name helpers shared by collection and interventions.

Only the hook API that ``HookedTransformer`` and ``TransformerBridge`` (compatibility
mode) share is used: ``model.hook_dict``, ``model.hooks(fwd_hooks=...)`` and ``model.cfg``.
"""

from __future__ import annotations

import difflib

from mechvalue.core.errors import HookError

RESID_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")

#: the model classes mechvalue runs on (:mod:`mechvalue.lm.backends`); ``load_model`` also takes ``"auto"``
BACKENDS = ("hooked", "bridge")


def resid_hook(layer: int, hook: str = "hook_resid_post") -> str:
    return f"blocks.{layer}.{hook}"


def mlp_hook(layer: int, hook: str = "hook_post") -> str:
    return f"blocks.{layer}.mlp.{hook}"


def hook_layer(name: str) -> int | None:
    """The block index in a hook name such as ``blocks.5.mlp.hook_post`` (None if not in a block)."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def check_layers(model, layers) -> list[int]:
    """Validate layer indices (negative ones count from the end); return them sorted, unique."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise HookError(f"layer {layer!r} is not an integer")
        if not -n <= layer < n:
            raise HookError(f"layer {layer} does not exist: the model has {n} layers (0..{n - 1})")
        out.append(layer % n)
    if not out:
        raise HookError("no layers given")
    return sorted(set(out))


def check_hook(model, name: str) -> str:
    """Raise :class:`HookError` naming close matches if ``name`` is not a hook of ``model``."""
    hook_dict = model.hook_dict
    if name not in hook_dict:
        close = difflib.get_close_matches(name, list(hook_dict), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise HookError(f"the model has no hook {name!r}{hint}")
    return name
