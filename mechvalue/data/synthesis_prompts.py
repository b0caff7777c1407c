"""The prompts of :mod:`mechvalue.data.synthesize` (the ``*_PROMPT`` constants) and the scene hints they rotate.

Contrastive pairs follow ConVA's two-step recipe (Jin et al. 2025): :data:`PAIR_POSITIVES_PROMPT` asks
for diverse positives, :data:`PAIR_NEGATIVE_PROMPT` for one matched negative per positive.
"""

_HEAD = (
    "You are helping build a research dataset on Schwartz's basic human values.\nValue: {value} "
    "({definition}).\n\n")
PAIR_POSITIVES_PROMPT = _HEAD + (
    "Write {k} different sentences, each describing a concrete action, choice or attitude of one "
    "person that clearly expresses {value}. Make them diverse: vary the persona (age, occupation, "
    "culture; first person 'I' or a named third person), the scene (for example {scenes}) and the "
    "sentence structure (length, clause order, tense). Each sentence is self-contained, 12-35 words, "
    "and never names the value.\n\nReply with only a JSON array of {k} strings.")
PAIR_NEGATIVE_PROMPT = _HEAD + (
    "This sentence expresses {value}:\n{positive}\n\nWrite ONE matched sentence that keeps the same "
    "persona, the same scene and the same sentence structure, changes as few words as possible, and no "
    "longer expresses {value}: the person does not act on or care about it. Add no new people, places "
    "or topics.\n\nReply with only a JSON object: {{\"negative\": \"<sentence>\"}}")
SYSTEM_PROMPT_PROMPT = _HEAD + (
    "Write {k} different system prompts (1-3 sentences each) that tell an AI assistant to prioritise "
    "{value} in its answers. Vary tone, length and wording (for example contexts like "
    "{scenes}).\n\nReply with only a JSON array of {k} strings.")
DILEMMA_PROMPT = _HEAD + (
    "Write {k} different everyday dilemmas, each a first-person question a user might ask an "
    "assistant, where honouring {value} conflicts with another value (prefer {conflicts}; allowed: "
    "{others}). Vary the scene (for example {scenes}). Give one short answer honouring {value} and one "
    "honouring the other value.\n\nReply with only a JSON array of {k} objects with keys \"question\", "
    "\"value_answer\", \"conflict_value\", \"conflict_answer\".")
PORTRAIT_PROMPT = _HEAD + (
    "Write {k} different PVQ-style portraits of a person who holds {value}, two sentences each, "
    "starting 'It is important to this person ...'. Vary the life area (for example {scenes}) and "
    "never name the value.\n\nReply with only a JSON array of {k} strings.")
QUERY_PROMPT = (
    "Write {k} different short questions a user might ask an AI assistant, of the kind '{category}'. "
    "They must be neutral: presuppose no value (no stance on success, tradition, pleasure, caring, "
    "...) and touch everyday topics (for example {scenes}).\n\nReply with only a JSON array of {k} "
    "strings.")
#: life areas rotated through the prompts' ``{scenes}`` hints (order shuffled by the seed)
SCENES = ("work", "school", "family dinner", "sports", "travel", "money", "neighbours", "online life",
          "health", "a wedding", "a hospital", "farming", "a small business", "religion", "the military",
          "arts", "cooking", "a city council", "old age", "childhood", "science", "friendship",
          "moving house")
