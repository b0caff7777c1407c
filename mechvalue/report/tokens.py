"""Token views of activations (re-exported by :mod:`mechvalue.report.figures`).

:func:`neuron_activation_view` (circuitsvis, for notebooks) and :func:`tokens_html`
(self-contained colored spans, no JavaScript, used by the report).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from mechvalue.core.errors import MechvalueError


def _token_arrays(tokens: Sequence[str], activations) -> tuple[list[str], np.ndarray]:
    acts = np.asarray(activations.detach().cpu() if hasattr(activations, "detach") else activations, float)
    acts = acts.reshape(-1) if acts.ndim > 1 and max(acts.shape) == acts.size else acts
    tokens = [str(t) for t in tokens]
    if acts.ndim != 1 or len(acts) != len(tokens):
        raise MechvalueError(f"tokens and activations differ: {len(tokens)} tokens, activations of shape "
                             f"{np.shape(acts)}")
    return tokens, acts


def neuron_activation_view(tokens: Sequence[str], activations, **kwargs):
    """circuitsvis ``colored_tokens`` view of one neuron's activations (renders in notebooks)."""
    from circuitsvis.tokens import colored_tokens

    tokens, acts = _token_arrays(tokens, activations)
    return colored_tokens(tokens, [float(a) for a in np.nan_to_num(acts)], **kwargs)


def tokens_html(tokens: Sequence[str], activations, *, max_abs: float | None = None, mark: int | None = None) -> str:
    """Tokens as inline-styled ``<span>``s, red for positive and blue for negative activation.

    Self-contained HTML (no JavaScript); each span's tooltip shows its activation. ``max_abs``
    fixes the colour scale (default: the largest absolute activation); token ``mark`` is outlined.
    """
    tokens, acts = _token_arrays(tokens, activations)
    finite = np.abs(acts[np.isfinite(acts)])
    scale = float(max_abs) if max_abs else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    spans = []
    for i, (tok, a) in enumerate(zip(tokens, acts)):
        text = html.escape(tok).replace("\n", "⏎")
        outline = ";outline:1px solid #000" if i == mark else ""
        if not np.isfinite(a):
            spans.append(f'<span class="tok" style="{outline[1:]}" title="nan">{text}</span>')
            continue
        rgb = "220,38,38" if a >= 0 else "37,99,235"
        style = f"background:rgba({rgb},{min(1.0, abs(a) / scale):.2f}){outline}"
        spans.append(f'<span class="tok" style="{style}" title="{a:.3g}">{text}</span>')
    return '<span class="tokens" style="white-space:pre-wrap;font-family:monospace">' + "".join(spans) + "</span>"
