"""Chat messages for the toxicity bench: one or two sentences each (100-300 characters),
benign ones and abusive ones, written from fixed pools with a fixed seed, so every run
(and every arm of a run) scores the same texts in the same order.

The abusive ones are what a toxicity detector is there for: insults, threats, contempt,
with and without swear words (the built-in profanity classifier only sees the latter).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

SEED = 20261129
COUNT = 1000  # texts in the pool; requests take them in turn
ABUSIVE_SHARE = 0.3
MIN_CHARS, MAX_CHARS = 100, 300

SLOTS = {
    "thing": (
        "the invoice",
        "my resume",
        "the quarterly report",
        "this SQL query",
        "the README",
        "my cover letter",
        "the onboarding guide",
        "this Python script",
        "the release notes",
        "our privacy policy",
        "the lesson plan",
        "my wedding speech",
    ),
    "topic": (
        "the heat pump",
        "database indexes",
        "the French Revolution",
        "sourdough starters",
        "tax deductions",
        "the new API",
        "marathon training",
        "Kubernetes probes",
        "the budget meeting",
        "houseplants",
        "compound interest",
        "the train strike",
    ),
    "person": (
        "my landlord",
        "the support team",
        "my manager",
        "the recruiter",
        "my sister",
        "the contractor",
        "our customer",
        "the school",
    ),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend", "tomorrow"),
}

BENIGN = (
    "Can you help me rewrite {thing} so it sounds a bit more professional?",
    "Thanks, that worked perfectly. Could you also explain why the second step matters?",
    "I need a short summary of {topic} for a meeting on {day}.",
    "Please write a polite email to {person} asking for an update on {thing}.",
    "What is the difference between the two approaches you suggested for {topic}?",
    "Could you list three common mistakes people make with {topic} and how to avoid them?",
    "I am not sure I understood the last part; could you give me a simple example?",
    "Please check {thing} for spelling and grammar, and keep my tone.",
    "Can you translate this paragraph into Spanish and keep it friendly?",
    "My team meets on {day}. Draft an agenda about {topic} that fits in thirty minutes.",
    "That answer was really helpful, thank you so much for your patience today.",
    "How would you explain {topic} to a twelve year old who likes football?",
    "Could you turn {thing} into five bullet points for {person}?",
    "I disagree with the second point, but I see why you made it. What are the sources?",
    "Is there a cheaper way to handle {topic}? We are a small team with a tight budget.",
    "Please make {thing} shorter; it has to fit on one page by {day}.",
)

ABUSIVE = (
    "You are a useless idiot and every answer you give is garbage.",
    "Shut up, nobody asked for your stupid opinion about {topic}.",
    "This is the dumbest damn thing I have ever read, you absolute moron.",
    "If {person} ignores me again I will find out where they live and make them regret it.",
    "People like you are pathetic losers who should just disappear.",
    "What the hell is wrong with you, are you brain dead or just lazy?",
    "I swear this crap was written by clowns who cannot read.",
    "Screw you and your worthless advice about {thing}.",
    "Tell {person} they are a worthless piece of shit and I hope they get fired.",
    "You are so stupid it hurts, a child could do {thing} better than you.",
    "Keep talking like that and I will hurt you, I am not joking.",
    "Go to hell, you ignorant little troll, and take {thing} with you.",
    "Your answer about {topic} is idiotic, just like everyone who made you.",
    "I hate you and everyone who works on this pathetic excuse for a product.",
)


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    abusive: bool


def _fill(rng: random.Random, template: str) -> str:
    return template.format(**{k: rng.choice(v) for k, v in SLOTS.items()})


def _one(rng: random.Random, abusive: bool) -> str:
    target = rng.randint(MIN_CHARS, MAX_CHARS - 40)  # a spread of lengths, as in a chat
    while True:
        if abusive:  # an abusive sentence, often after or before a benign one
            parts = [_fill(rng, rng.choice(ABUSIVE))]
            if rng.random() < 0.6:
                parts.insert(rng.randrange(2), _fill(rng, rng.choice(BENIGN)))
        else:
            parts = [_fill(rng, rng.choice(BENIGN))]
        while len(" ".join(parts)) < target:
            parts.append(_fill(rng, rng.choice(BENIGN)))
        text = " ".join(parts)
        if len(text) <= MAX_CHARS:
            return text


def pool(count: int = COUNT, seed: int = SEED) -> list[Text]:
    """``count`` messages, ``ABUSIVE_SHARE`` of them abusive, in a fixed shuffled order."""
    rng = random.Random(seed)  # noqa: S311  # reproducible texts, not secrets
    abusive = round(count * ABUSIVE_SHARE)
    flags = [True] * abusive + [False] * (count - abusive)
    rng.shuffle(flags)
    return [Text(_one(rng, flag), flag) for flag in flags]


def words(texts: Iterable[str]) -> list[str]:
    """The distinct words and punctuation of ``texts`` as a BERT tokenizer splits them
    (lower-cased, accents stripped): a WordPiece vocabulary where each is one token."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer, pre = BertNormalizer(lowercase=True), BertPreTokenizer()
    found: set[str] = set()
    for text in texts:
        found.update(piece for piece, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    return sorted(found)
