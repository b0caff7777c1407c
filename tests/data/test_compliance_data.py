"""Acceptance of the compliance-channel data in data/compliance/, its loaders' validation, and a round trip
through lm-eval's IFEval checkers (skipped without lm-eval)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter

import pytest

from mechvalue.core.errors import DataError
from mechvalue.data.compliance import (
    ANSWER_STYLES,
    EXAMPLE_STYLES,
    IFEVAL_INSTRUCTIONS,
    IFEVAL_KWARGS,
    REFUSAL_CATEGORIES,
    REFUSAL_STYLES,
    InstructionPrompt,
    load_instruction_prompts,
    load_refusal_audit,
    load_refusal_examples,
    load_refusal_requests,
)

PROMPTS = load_instruction_prompts()
REQUESTS = load_refusal_requests()
EXAMPLES = load_refusal_examples()
BY_TYPE: dict[str, list[InstructionPrompt]] = {i: [p for p in PROMPTS if p.instruction_id_list == (i,)]
                                               for i in IFEVAL_INSTRUCTIONS}

#: openings that mark a "prefix" refusal (and that "soft" refusals and plain answers avoid)
REFUSAL_OPENINGS = ("I'm sorry", "I am sorry", "Sorry, but", "I apologize", "I cannot", "I can't", "I won't",
                    "I will not", "I'm unable", "I am unable", "I'm not able", "I must decline", "As an AI")
SOFT_AVOIDS = ("sorry", "apolog", "cannot", "can't", "unable", "as an ai")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
#: the first six styles (54 each) and the hard cases modelled on a small chat model's output (24 each)
ORIGINAL_STYLES = ("prefix", "soft", "redirect", "answer", "apology_answer", "caveat_answer")
SMALL_MODEL_STYLES = ("capability", "warning", "deflection", "assistant_filler", "roleplay_compliance",
                      "off_topic")


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _sentences(text: str) -> int:
    return len(re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip()))


# ---------------------------------------------------------------- counts and balance


def test_instruction_prompts_cover_the_twelve_types_evenly():
    assert len(PROMPTS) >= 190
    assert set(IFEVAL_INSTRUCTIONS) == set(IFEVAL_KWARGS) and len(IFEVAL_INSTRUCTIONS) == 12
    counts = Counter(p.instruction_id_list[0] for p in PROMPTS)
    assert set(counts) == set(IFEVAL_INSTRUCTIONS)
    assert all(15 <= n <= 18 for n in counts.values()), counts
    assert all(len(p.instruction_id_list) == len(p.kwargs) == 1 for p in PROMPTS)
    assert [p.id for p in PROMPTS] == [f"if-{i:03d}" for i in range(len(PROMPTS))]


def test_refusal_requests_are_balanced_over_categories():
    assert len(REQUESTS) >= 110
    counts = Counter(r.category for r in REQUESTS)
    assert set(counts) == set(REFUSAL_CATEGORIES)
    assert all(12 <= n <= 16 for n in counts.values()), counts
    assert [r.id for r in REQUESTS] == [f"rr-{i:03d}" for i in range(len(REQUESTS))]


def test_refusal_examples_are_balanced_over_labels_and_styles():
    assert len(EXAMPLES) == 468
    labels = Counter(e.refusal for e in EXAMPLES)
    assert labels[True] == labels[False] == 234, labels
    styles = Counter(e.style for e in EXAMPLES)
    assert set(styles) == set(EXAMPLE_STYLES), styles
    assert all(styles[s] == 54 for s in ORIGINAL_STYLES), styles
    assert all(styles[s] == 24 for s in SMALL_MODEL_STYLES), styles
    assert all(e.refusal == (e.style in REFUSAL_STYLES) for e in EXAMPLES)
    assert [e.id for e in EXAMPLES] == [f"re-{i:03d}" for i in range(len(EXAMPLES))]


def test_no_duplicate_prompts_or_texts():
    for texts in ([p.prompt for p in PROMPTS], [r.prompt for r in REQUESTS], [e.text for e in EXAMPLES]):
        dup = [t for t, n in Counter(_norm(t) for t in texts).items() if n > 1]
        assert not dup, dup[:3]
    shared = {_norm(p.prompt) for p in PROMPTS} & {_norm(r.prompt) for r in REQUESTS}
    assert not shared


def test_examples_match_their_style():
    for e in EXAMPLES:
        assert 1 <= _sentences(e.text) <= 4, e.id
        opens_like_refusal = e.text.startswith(REFUSAL_OPENINGS)
        if e.style == "prefix":
            assert opens_like_refusal, e.id
        elif e.style == "soft":
            assert not any(w in e.text.lower() for w in SOFT_AVOIDS), e.id
        elif e.style == "apology_answer":
            assert e.text.startswith(("Sorry", "I'm sorry to hear")), e.id
        elif e.style in ("answer", "caveat_answer"):
            assert not opens_like_refusal, e.id
        elif e.style in ("warning", "deflection", "roleplay_compliance", "off_topic"):
            assert not opens_like_refusal, e.id


def test_small_model_hard_cases_cover_their_traps():
    by_style = {s: [e.text for e in EXAMPLES if e.style == s] for s in SMALL_MODEL_STYLES}
    assert set(SMALL_MODEL_STYLES) <= set(EXAMPLE_STYLES)
    assert {"capability", "warning", "deflection"} <= set(REFUSAL_STYLES)
    assert {"assistant_filler", "roleplay_compliance", "off_topic"} <= set(ANSWER_STYLES)
    # filler is in assistant voice, and some of it opens with an apology without declining
    assert all("help" in t.lower() or "here" in t.lower() for t in by_style["assistant_filler"])
    assert sum("I'm here to help" in t for t in by_style["assistant_filler"]) >= 6
    assert sum(t.startswith("I'm sorry") for t in by_style["assistant_filler"]) >= 4
    # some claimed-inability refusals carry no apology word or standard opening
    assert sum(not t.startswith(REFUSAL_OPENINGS) and "sorry" not in t.lower()
               for t in by_style["capability"]) >= 12
    # some deflections are in assistant voice, like the filler they must be told apart from
    assert sum(t.startswith("I'm here to help") for t in by_style["deflection"]) >= 2
    # many are cut off mid-sentence, as at a short generation limit
    cut = [t for ts in by_style.values() for t in ts if not t.rstrip().endswith((".", "!", "?", '"'))]
    assert len(cut) >= 30


# ---------------------------------------------------------------- prompts state their instruction


_MENTIONS = {
    "change_case:english_lowercase": lambda kw: ("lowercase", "lower case", "any capital letters"),
    "change_case:english_capital": lambda kw: ("capital", "uppercase", "all caps"),
    "punctuation:no_comma": lambda kw: ("comma",),
    "detectable_format:json_format": lambda kw: ("JSON",),
    "detectable_format:title": lambda kw: ("<<", "angular brackets"),
    "detectable_content:postscript": lambda kw: (kw["postscript_marker"],),
    "startend:end_checker": lambda kw: (kw["end_phrase"],),
    "detectable_format:number_bullet_lists": lambda kw: (f"exactly {kw['num_bullets']} ",
                                                         f"exactly {NUMBER_WORDS[kw['num_bullets']]} "),
    "length_constraints:number_words": lambda kw: (f"{kw['num_words']} words",),
    "length_constraints:number_sentences": lambda kw: (f"{kw['num_sentences']} sentences",),
}


@pytest.mark.parametrize("iid", IFEVAL_INSTRUCTIONS)
def test_each_prompt_states_its_instruction_and_kwargs_are_in_range(iid):
    for p in BY_TYPE[iid]:
        kw = p.kwargs[0]
        if iid in ("keywords:existence", "keywords:forbidden_words"):
            words = kw["keywords" if iid == "keywords:existence" else "forbidden_words"]
            assert 1 <= len(words) <= 2 and all(re.fullmatch(r"[a-z]+", w) for w in words), p.id
            assert all(f"'{w}'" in p.prompt for w in words), p.id
        else:
            assert any(m in p.prompt for m in _MENTIONS[iid](kw)), (p.id, p.prompt)
        if "relation" in kw:
            assert kw["relation"] in ("less than", "at least")
        assert 2 <= kw.get("num_bullets", 2) <= 5 and 20 <= kw.get("num_words", 20) <= 120
        assert 2 <= kw.get("num_sentences", 2) <= 6 and kw.get("postscript_marker", "P.S.") == "P.S."
    relations = Counter(p.kwargs[0].get("relation") for p in BY_TYPE[iid])
    if iid.startswith("length_constraints:"):
        assert relations["less than"] >= 5 and relations["at least"] >= 5


# ---------------------------------------------------------------- loader validation


def _good(kind: str) -> dict:
    return {"instructions": {"id": "if-000", "prompt": "Say hi. Use no commas.",
                             "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
            "refusal_requests": {"id": "rr-000", "category": "privacy", "prompt": "Read my partner's texts."},
            "refusal_examples": {"id": "re-000", "text": "I can't help with that.", "refusal": True,
                                 "style": "prefix"}}[kind]


_LOADERS = {"instructions": load_instruction_prompts, "refusal_requests": load_refusal_requests,
            "refusal_examples": load_refusal_examples}

_BAD = [
    ("instructions", {"instruction_id_list": ["detectable_format:constrained_response"]}, "unknown instruction"),
    ("instructions", {"instruction_id_list": []}, "non-empty list"),
    ("instructions", {"instruction_id_list": "punctuation:no_comma"}, "non-empty list"),
    ("instructions", {"kwargs": [{}, {}]}, "2 entries for 1"),
    ("instructions", {"kwargs": [{"num_words": 5}]}, "takes kwargs"),
    ("instructions", {"instruction_id_list": ["length_constraints:number_words"],
                      "kwargs": [{"num_words": 50, "relation": "more than"}]}, "relation"),
    ("instructions", {"instruction_id_list": ["detectable_format:number_bullet_lists"],
                      "kwargs": [{"num_bullets": "3"}]}, "positive integer"),
    ("instructions", {"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": []}]}, "list of words"),
    ("instructions", {"prompt": "  "}, "'prompt' must be a non-empty string"),
    ("refusal_requests", {"category": "violence"}, "category must be one of"),
    ("refusal_requests", {"extra": 1}, "unexpected"),
    ("refusal_examples", {"refusal": "true"}, "'refusal' must be true or false"),
    ("refusal_examples", {"style": "rude"}, "style must be one of"),
    ("refusal_examples", {"style": "answer"}, "non-refusal style"),
    ("refusal_examples", {"id": 7}, "'id' must be a non-empty string"),
]


@pytest.mark.parametrize(("kind", "change", "message"), _BAD)
def test_a_corrupt_line_raises_a_data_error_with_file_and_line(tmp_path, kind, change, message):
    good = _good(kind)
    path = tmp_path / "compliance" / f"{kind}.jsonl"
    path.parent.mkdir()
    second = {**good, "id": good["id"][:3] + "001", **change}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(second) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{kind}\.jsonl:3: .*{re.escape(message)}"):
        _LOADERS[kind](root=tmp_path)


@pytest.mark.parametrize("kind", sorted(_LOADERS))
def test_bad_json_duplicate_ids_missing_and_empty_files(tmp_path, kind):
    path = tmp_path / "compliance" / f"{kind}.jsonl"
    path.parent.mkdir()
    with pytest.raises(DataError, match="no such file"):
        _LOADERS[kind](root=tmp_path)
    path.write_text(json.dumps(_good(kind)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{kind}\.jsonl:2: invalid JSON"):
        _LOADERS[kind](root=tmp_path)
    path.write_text(json.dumps(_good(kind)) + "\n" + json.dumps(_good(kind)) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{kind}\.jsonl:2: duplicate id"):
        _LOADERS[kind](root=tmp_path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        _LOADERS[kind](root=tmp_path)
    path.write_text(json.dumps(_good(kind)) + "\n", encoding="utf-8")
    (record,) = _LOADERS[kind](root=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.id = "x"  # type: ignore[misc]


def test_instruction_fields_load_as_tuples():
    p = PROMPTS[0]
    assert isinstance(p.instruction_id_list, tuple) and isinstance(p.kwargs, tuple)
    assert isinstance(p.kwargs[0], dict)


# ---------------------------------------------------------------- round trip through lm-eval's IFEval checkers


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """lm-eval's INSTRUCTION_DICT. Without nltk's punkt data (no web here) an empty, untrained punkt model is put
    on nltk's path first: lm-eval downloads ``punkt_tab`` on import if it finds none, and its sentence counter
    needs one. Untrained punkt splits at every ``.``/``!``/``?`` followed by a space (so "Dr. Smith" is two)."""
    nltk = pytest.importorskip("nltk", reason="nltk is not installed")
    added = None
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        root = tmp_path_factory.mktemp("nltk_data")
        english = root / "tokenizers" / "punkt_tab" / "english"
        english.mkdir(parents=True)
        for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
            (english / name).write_text("")
        added = str(root)
        nltk.data.path.insert(0, added)
    reg = pytest.importorskip("lm_eval.tasks.ifeval.instructions_registry",
                              reason="lm_eval (with its IFEval checkers) cannot be imported")
    langdetect = pytest.importorskip("langdetect", reason="langdetect is not installed")
    langdetect.DetectorFactory.seed = 0  # the case checkers detect English; make that deterministic
    yield reg.INSTRUCTION_DICT
    if added is not None:
        nltk.data.path.remove(added)


SHORT = "Keep it simple and enjoy it."
LONG = ("Start the day slowly with a warm drink and a few quiet minutes by the window. After that, take a short "
        "walk around the block to wake up your legs and clear your head. Once you are back home, write down the "
        "three things you most want to finish before lunch and begin with the easiest one. Take a proper break in "
        "the middle of the day and eat something that is not at your desk. In the afternoon, tackle the harder "
        "task while your energy is still good, and turn off notifications for an hour. Finish by tidying your "
        "space, planning tomorrow in a few lines, and spending the evening on something you enjoy with people "
        "you like. That rhythm keeps most days calm and productive without much effort.")
ONE_SENTENCE = "One clear sentence is enough here."
SEVEN_SENTENCES = ("Fill the kettle. Warm the pot. Add the leaves. Pour the water. Wait four minutes. "
                   "Pour a cup. Enjoy it slowly.")
LOWER = "here is my answer, written entirely in lowercase letters as you asked, and i hope it is useful to you."
MIXED = "Here is my answer. It is written with the usual capital letters at the start of each sentence."

#: per instruction type: responses (built from the prompt's kwargs) that must pass and ones that must fail
RESPONSES = {
    "change_case:english_lowercase": (lambda kw: [LOWER], lambda kw: [MIXED, LOWER.upper()]),
    "change_case:english_capital": (lambda kw: [LOWER.upper()], lambda kw: [MIXED, LOWER]),
    "punctuation:no_comma": (lambda kw: ["Start early and keep things simple. Rest when you need to."],
                             lambda kw: ["Start early, keep things simple, and rest when you need to."]),
    "detectable_format:json_format": (
        lambda kw: ['{"answer": "Start early and keep it simple."}', '```json\n{"items": ["tea", "toast"]}\n```'],
        lambda kw: ["Start early and keep it simple.", 'Here you go: {"answer": "tea"}']),
    "detectable_format:number_bullet_lists": (
        lambda kw: ["Here are my tips:\n" + "\n".join(f"* Tip number {i}." for i in range(kw["num_bullets"]))],
        lambda kw: ["\n".join(f"* Tip number {i}." for i in range(kw["num_bullets"] + 1)),
                    "Here are my tips, written as a paragraph without any list."]),
    "keywords:existence": (lambda kw: [f"Here is my reply, which mentions {' and '.join(kw['keywords'])}."],
                           lambda kw: ["Here is a short reply."]),
    "keywords:forbidden_words": (lambda kw: ["Here is a short reply."],
                                 lambda kw: [f"Here is a reply about the {w}." for w in kw["forbidden_words"]]),
    "length_constraints:number_words": (
        lambda kw: [SHORT if kw["relation"] == "less than" else LONG],
        lambda kw: [LONG if kw["relation"] == "less than" else SHORT]),
    "length_constraints:number_sentences": (
        lambda kw: [ONE_SENTENCE if kw["relation"] == "less than" else SEVEN_SENTENCES],
        lambda kw: [SEVEN_SENTENCES if kw["relation"] == "less than" else ONE_SENTENCE]),
    "startend:end_checker": (lambda kw: [f"Here are the steps you asked for. {kw['end_phrase']}"],
                             lambda kw: [f"{kw['end_phrase']} Here are the steps you asked for."]),
    "detectable_content:postscript": (lambda kw: ["Here is my note.\n\nP.S. See you soon."],
                                      lambda kw: ["Here is my note. See you soon."]),
    "detectable_format:title": (lambda kw: ["<<A Short Title>>\nHere is the text."],
                                lambda kw: ["A Short Title\nHere is the text.", "<<   >>\nHere is the text."]),
}


def test_the_sentence_counter_works_offline(registry):
    from lm_eval.tasks.ifeval import instructions_util

    assert instructions_util.count_sentences(SEVEN_SENTENCES) == 7
    assert instructions_util.count_sentences(ONE_SENTENCE) == 1
    assert instructions_util.count_words(LONG) > 120 and instructions_util.count_words(SHORT) < 20


def test_kwarg_names_match_lm_eval(registry):
    assert set(IFEVAL_INSTRUCTIONS) <= set(registry)
    for iid in IFEVAL_INSTRUCTIONS:
        checker = registry[iid](iid)
        checker.build_description(**BY_TYPE[iid][0].kwargs[0])
        assert sorted(checker.get_instruction_args_keys()) == sorted(IFEVAL_KWARGS[iid]), iid


@pytest.mark.parametrize("iid", IFEVAL_INSTRUCTIONS)
def test_every_prompt_builds_a_checker_that_tells_pass_from_fail(registry, iid):
    passing, failing = RESPONSES[iid]
    for p in BY_TYPE[iid]:
        for instruction, kwargs in zip(p.instruction_id_list, p.kwargs):
            checker = registry[instruction](instruction)
            checker.build_description(**kwargs)
            args = checker.get_instruction_args() or {}
            for k, v in kwargs.items():
                assert args[k] == (sorted(v) if isinstance(v, list) else v), (p.id, k)
            for resp in passing(kwargs):
                assert checker.check_following(resp), (p.id, resp)
            for resp in failing(kwargs):
                assert not checker.check_following(resp), (p.id, resp)


def test_refusal_audit_is_hand_labelled_responses_to_the_bundled_requests(tmp_path):
    audit = load_refusal_audit()
    assert len(audit) >= 100 and {a.label for a in audit} == {"refusal", "not_refusal", "unclear"}
    assert {a.request_id for a in audit} <= {r.id for r in REQUESTS}
    assert len({a.text for a in audit}) == len(audit)  # no response twice
    assert len({a.arm for a in audit}) >= 5 and sum(a.label == "refusal" for a in audit) >= 10
    bad = tmp_path / "compliance"
    bad.mkdir()
    line = json.dumps({"id": "x", "request_id": "rr-000", "arm": "base", "text": "No.", "label": "maybe"})
    (bad / "refusal_audit.jsonl").write_text(line + "\n")
    with pytest.raises(DataError, match="label must be one of"):
        load_refusal_audit(tmp_path)
