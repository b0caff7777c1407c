"""Prompts, replies and scores of automated neuron explanations (no model, no endpoint): see :mod:`.explain`.

- :func:`discretize`, :func:`format_examples`: Bills et al.'s ``token<TAB>activation`` lines, activations as
  integers 0-10 relative to the neuron's max over the explanation texts;
- :func:`explanation_prompt` / :func:`parse_explanation`: the explainer completes "the main thing this
  neuron does is find ..." in one short phrase;
- :func:`simulation_prompt` / :func:`parse_simulation`: the simulator gets the explanation and one text's
  tokens, one per line, and answers ``token<TAB>number`` per line; the parser aligns lines to tokens
  (missing -> NaN) and counts the lines it could not read;
- :func:`simulation_score`: Pearson correlation of true and predicted activations over all simulation tokens;
- :func:`summarize`: mean score of target vs random neurons, bootstrap 95% CIs and their difference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechvalue.analysis.metrics import bootstrap_ci
from mechvalue.core.errors import MechvalueError

PREFIX = "the main thing this neuron does is find"
EXPLAIN_PROMPT = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short document. "
    "Look at the parts of the documents the neuron activates for and summarize in one short phrase what the "
    "neuron is looking for. Don't list examples of words.\n\n"
    "The activation format is token<tab>activation. Activation values range from 0 to 10. A neuron finding what "
    "it's looking for is represented by a non-zero activation value. The higher the activation value, the "
    "stronger the match.\n\n{examples}\n\nThe same activations, with the zeros left out: {active}\n\n"
    "Reply with one short phrase that completes the sentence \"" + PREFIX + " ...\".\n\n"
    "Explanation of the neuron's behaviour: " + PREFIX)
SIMULATE_PROMPT = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
    "document.\nExplanation of this neuron: " + PREFIX + " {explanation}.\n\n"
    "Predict the neuron's activation on every token of the document below, as an integer from 0 (no match) to "
    "10 (strongest match); most tokens are 0. Reply with exactly one line per token, in the same order: the "
    "token, a tab, the number. Nothing else.\n\n<start>\n{tokens}\n<end>")
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", flags=re.S | re.I)
_LEAD = re.compile(r"^\W*(?:explanation[^:]*:\s*)?(?:" + PREFIX.replace(" ", r"\s+") + r")?\s*[:\-]?\s*", re.I)
_SIM_LINE = re.compile(r"^(?P<tok>.*?)[\t ]*[:=|]?[\t ]*(?P<num>-?\d+(?:\.\d+)?)[\t ]*$")
_SKIP_LINE = re.compile(r"^\s*(?:<start>|<end>|```\w*|)\s*$", re.I)


@dataclass
class ActivationRecord:
    """One text read by the model: its ``tokens`` (str each) and the neuron's ``acts`` ``[pos]`` (hook_post)."""

    text: str
    tokens: list[str]
    acts: Float[Tensor, " pos"]

    @property
    def max(self) -> float:
        return float(self.acts.max())


def discretize(acts: Float[Tensor, " pos"], max_act: float) -> Int[Tensor, " pos"]:
    """Bills' 0-10 scale: ``floor(10 * max(a, 0) / max_act)``, capped at 10; all 0 when ``max_act <= 0``."""
    acts = torch.as_tensor(acts).float()
    if not math.isfinite(max_act) or max_act <= 0:
        return torch.zeros(acts.shape, dtype=torch.long)
    return torch.floor(10 * acts.clamp(min=0) / max_act).clamp(0, 10).long()


def show_token(token: str) -> str:
    """A token on one line: newline, carriage return and tab written as ``\\n``, ``\\r``, ``\\t``."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def format_examples(records: Sequence[ActivationRecord], max_act: float) -> str:
    """Each text as ``<start>``, one ``token<TAB>activation`` line per token (0-10, :func:`discretize`), ``<end>``."""
    blocks = []
    for rec in records:
        levels = discretize(rec.acts, max_act).tolist()
        blocks.append("\n".join(["<start>", *(f"{show_token(t)}\t{v}" for t, v in zip(rec.tokens, levels)), "<end>"]))
    return "\n\n".join(blocks)


def explanation_prompt(records: Sequence[ActivationRecord]) -> str:
    """The explainer's prompt: the examples on the 0-10 scale of their max, then the non-zero tokens again."""
    if not records:
        raise MechvalueError("no activation records to explain")
    max_act = max(r.max for r in records)
    active = [f"{show_token(t)} ({v})" for r in records for t, v in zip(r.tokens, discretize(r.acts, max_act).tolist())
              if v > 0]
    return EXPLAIN_PROMPT.format(examples=format_examples(records, max_act), active=", ".join(active[:40]) or "none")


def parse_explanation(reply: str) -> str:
    """The explanation phrase of a reply: its first non-empty line with a repeated "the main thing this neuron
    does is find" (or "Explanation:") lead, quotes, markup and a final period removed ("" if nothing is left)."""
    text = _THINK.sub(" ", reply or "")
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    for _ in range(2):  # "**Explanation:** the main thing ... find X": the label, then the lead
        line = _LEAD.sub("", line).strip().strip("*_`\"'“”").strip()
    return line.rstrip(".").strip()[:300]


def simulation_prompt(explanation: str, tokens: Sequence[str]) -> str:
    """The simulator's prompt: the explanation, then the text's tokens one per line between ``<start>``/``<end>``."""
    if not tokens:
        raise MechvalueError("no tokens to simulate")
    return SIMULATE_PROMPT.format(explanation=explanation.strip(), tokens="\n".join(show_token(t) for t in tokens))


def _same(a: str, b: str) -> bool:
    a, b = a.strip().lower(), b.strip().lower()
    return a == b or a.strip("\"'`").strip() == b.strip("\"'`").strip()


def parse_simulation(reply: str, tokens: Sequence[str], window: int = 8) -> tuple[Float[Tensor, " pos"], int]:
    """Predicted activations ``[pos]`` (0-10, NaN where missing) and the number of unparsed reply lines.

    Reply lines read ``token<TAB>number`` (a space, ``:``, ``=`` or ``|`` may stand for the tab); blank lines,
    ``<start>``/``<end>`` and code fences are skipped. Lines are aligned in order: a line's token is matched to
    the next unfilled token among the following ``window`` (case, surrounding spaces and quotes ignored), so
    a skipped token stays NaN; a line that is a bare number from 0 to 10 fills the next token. Other lines
    (prose, tokens that match nothing, bare numbers off the scale) count as unparsed. Numbers after a token are
    clipped to [0, 10].
    """
    pred = torch.full((len(tokens),), float("nan"))
    shown, cursor, unparsed = [show_token(t) for t in tokens], 0, 0
    for line in _THINK.sub(" ", reply or "").splitlines():
        if _SKIP_LINE.match(line):
            continue
        m = _SIM_LINE.match(line)
        if not m:
            unparsed += 1
            continue
        tok, number = m.group("tok"), float(m.group("num"))
        value = min(10.0, max(0.0, number))
        if not tok.strip():  # a bare number: the next token's, if it is on the scale (else an echoed token)
            j = cursor if cursor < len(tokens) and 0 <= number <= 10 else None
        else:
            j = next((k for k in range(cursor, min(len(tokens), cursor + window)) if _same(tok, shown[k])), None)
        if j is None:
            unparsed += 1
            continue
        pred[j], cursor = value, j + 1
    return pred, unparsed


def score_with_note(true: Sequence[Tensor], predicted: Sequence[Tensor]) -> tuple[float, str]:
    if len(true) != len(predicted):
        raise MechvalueError(f"got {len(predicted)} predicted texts for {len(true)} true ones")
    if not true:
        return float("nan"), "no simulation texts"
    t = torch.cat([torch.as_tensor(x).reshape(-1).double() for x in true])
    p = torch.cat([torch.as_tensor(x).reshape(-1).double() for x in predicted])
    if t.shape != p.shape:
        raise MechvalueError(f"true and predicted activations differ in length: {t.numel()} vs {p.numel()} tokens")
    keep = torch.isfinite(t) & torch.isfinite(p)
    if int(keep.sum()) < 3:
        return float("nan"), f"{int(keep.sum())} tokens with a prediction (need 3)"
    t, p = t[keep], p[keep]
    for name, x in (("true activations", t), ("prediction", p)):
        if float((x - x.mean()).abs().max()) <= 1e-9 * max(1.0, float(x.abs().max())):
            return float("nan"), f"constant {name}"
    t, p = t - t.mean(), p - p.mean()
    return float((t * p).sum() / (t.norm() * p.norm())), ""


def simulation_score(true: Sequence[Tensor], predicted: Sequence[Tensor]) -> float:
    """Pearson correlation of true and predicted activations over all tokens of all simulation texts (one ``[pos]``
    tensor per text each); tokens with a NaN prediction are left out. NaN with fewer than 3 tokens or a constant
    side."""
    return score_with_note(true, predicted)[0]


def summarize(df: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean score of target and of random neurons with bootstrap 95% CIs, and target minus random.

    NaN scores are left out (``n`` counts rows, ``n_scored`` finite scores); a group with one score has NaN
    bounds, an empty one NaN everywhere. The difference resamples both groups independently.
    """
    if not {"kind", "score"} <= set(df.columns):
        raise MechvalueError(f"summarize needs the columns kind and score (an explain_neurons table), got {list(df)}")
    nan, out, scores = float("nan"), {}, {}
    for kind in ("target", "random"):
        s = df.loc[df["kind"] == kind, "score"].to_numpy(dtype=float)
        f = scores[kind] = s[np.isfinite(s)]
        est, lo, hi = bootstrap_ci(f, n_boot=n_boot, seed=seed) if len(f) else (nan, nan, nan)
        out[kind] = {"n": int(len(s)), "n_scored": int(len(f)), "mean": est, "ci_low": lo, "ci_high": hi}
    a, b = scores["target"], scores["random"]
    diff = {"estimate": nan, "ci_low": nan, "ci_high": nan}
    if len(a) and len(b):
        diff["estimate"] = float(a.mean() - b.mean())
        if len(a) + len(b) > 2:
            rng = np.random.default_rng(seed)
            boots = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
                     - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
            diff["ci_low"], diff["ci_high"] = (float(q) for q in np.quantile(boots, [0.025, 0.975]))
    out["difference"] = diff
    return out
