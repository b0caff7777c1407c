"""The report's glossary: each metric in a sentence or two, with its unit and which direction is better."""

from __future__ import annotations

from mechvalue.report.tables import escape_html

GLOSSARY = (
    ("control success (CSR)", "proportion, 0–1", "higher = more on-target",
     "Share of an arm's generations that the judge scores above 0.5 on the target value; compare with the base "
     "arm's rate, which is what the model does unedited."),
    ("judged gain", "judge score (0–1 probability)", "higher = more on-target; 0 = no change",
     "Mean paired change, steered minus base on the same prompt, of the judge's score for the target value."),
    ("dilemma preference", "nats", "higher = more on-target; 0 = indifferent",
     "log P(the answer that honours the value) − log P(the conflicting answer) on the target's dilemmas; "
     "the gain is steered minus base on the same dilemma. Judge-free."),
    ("dilemma win", "proportion, 0–1", "higher = more on-target; chance level 0.5",
     "Share of dilemmas where the value's answer is the more likely one."),
    ("NLR (normalized leakage ratio)", "ratio, ≥ 0", "lower = less leakage; 0 = none",
     "Mean rise of the nine non-target values' scores divided by the target's own gain (floored at 0.01). "
     "Undefined (–) when the edit did not raise its target: there is no gain to divide by."),
    ("NGLR (normalized group leakage ratio)", "ratio", "1 = leakage spread uniformly; > 1 = concentrated",
     "Target → group: the share of a target's leakage that lands in a higher-order group, relative to uniform. "
     "Group → group: leakage from steering one group into another per unit of target gain. Undefined (–) "
     "where a target leaked (almost) nothing."),
    ("perplexity", "per token, ≥ 1", "lower = more fluent; compare with base",
     "exp(mean negative log-probability) of a generation under the unedited model, given its prompt."),
    ("Distinct-n (Distinct-2)", "proportion, 0–1", "higher = more diverse",
     "Unique n-grams divided by all n-grams over an arm's generations (n = 2: word pairs)."),
    ("MMLU accuracy", "proportion, 0–1", "higher = more capable; chance level 0.25",
     "Share of four-choice questions answered correctly (argmax over A/B/C/D) with the edit and its gate active; "
     "a drop from base is the edit's capability cost."),
    ("questionnaire score change", "rating points on a 1–6 scale", "higher = more of the value",
     "Change of the expected rating of portrait items of the value (ValueLocate's and the dual vectors' tests)."),
    ("τ (tau)", "probability difference, 0–1", "higher τ = fewer, more selective neurons",
     "ValueLocate's threshold on p(fires | one dimension) − p(fires | the opposite dimension); the paper uses 0.03."),
    ("chance level (split-half null)", "share of FFN neurons", "the located share should clearly exceed it",
     "What the same τ rule selects when both sides come from the same dimension (two halves of its questions): "
     "selection you would get with no real difference."),
    ("95% CI", "the metric's unit", "an interval covering 0 = not significant",
     "Percentile bootstrap over items (prompts, dilemmas, questions), pooled over targets where noted."),
    ("MDE (minimum detectable effect)", "the metric's unit", "an |effect| below it is underpowered",
     "(1.96 + 0.8416) × se with se = CI width / (2 × 1.96): the effect a two-sided test at α = 0.05 detects "
     "with 80% power."),
    ("p_adj (Benjamini-Hochberg)", "probability, 0–1", "below 0.05 = significant after adjustment",
     "The paired t-test's p-value adjusted for testing every target × arm of one comparison and metric; "
     "the verdict words (higher, lower, not significant, underpowered) come from it."),
    ("vs matched random controls", "the metric's unit", "above 0 = better than a random edit of the same size",
     "The arm minus its random control on the same item: same-norm random directions for vector methods, random "
     "neurons with the same per-layer counts for neuron edits; each item meets one of the n draws."),
    ("vs the value system prompt", "the metric's unit", "above 0 = stronger than simply asking for the value",
     "The arm minus the value-system-prompt arm on the same item."),
    ("judge AUC on generations", "0–1", "0.5 = chance; higher = the judge separates the value",
     "How well the judge tells a value's responses under a value system prompt from neutral responses to the "
     "same queries; flagged when its scores barely vary (std < 0.05)."),
    ("–", "", "", "Undefined or not measured (e.g. NLR of an edit that did not raise its target, a CI from one "
     "observation, MMLU in a run without MMLU questions). Never shown as 0."),
)


def render_glossary(page) -> None:
    page.add("<dl>" + "".join(
        f"<dt><b>{escape_html(name)}</b>" + (f" ({escape_html(unit)}; {escape_html(direction)})" if unit else "")
        + f"</dt><dd>{escape_html(text)}</dd>" for name, unit, direction, text in GLOSSARY) + "</dl>")
