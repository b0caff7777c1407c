"""Token views: self-contained HTML spans and the circuitsvis view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechvalue.core.errors import MechvalueError
from mechvalue.report import tokens as viz_tokens


def test_tokens_html_escapes_and_colours():
    out = viz_tokens.tokens_html(["<b>", " good", "\n", "bad"], [1.0, 0.5, 0.0, -1.0])
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert "rgba(220,38,38,1.00)" in out and "rgba(220,38,38,0.50)" in out and "rgba(37,99,235,1.00)" in out
    assert "⏎" in out and "<script" not in out
    assert viz_tokens.tokens_html(["a"], torch.tensor([[2.0]]), max_abs=4.0).count("0.50") == 1
    assert viz_tokens.tokens_html(["a", "b"], [0.0, 1.0], mark=1).count("outline") == 1
    with pytest.raises(MechvalueError, match="2 tokens"):
        viz_tokens.tokens_html(["a", "b"], [1.0, 2.0, 3.0])


def test_neuron_activation_view_is_circuitsvis():
    view = viz_tokens.neuron_activation_view(["a", " b"], np.array([0.1, 0.9]))
    assert "ColoredTokens" in str(view)
    with pytest.raises(MechvalueError, match="differ"):
        viz_tokens.neuron_activation_view(["a"], [1.0, 2.0])
