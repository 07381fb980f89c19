"""The prompts the bench scans and sends: support-ticket threads written with Faker.

Each text is a thread of customer and agent messages (greeting, English prose, contact
details, a refund IBAN, a signature), as a help-desk tool pastes into a prompt, cut to
an exact length. A fixed seed makes every run scan the same characters. No card number
or SSN is written in (the bundled pii policy would block the prompt); the bench checks
none is found by accident.

guard's pii detector keeps the findings of recent texts by a digest of the text, and
its phone recognizer keeps libphonenumber's verdict per number: a text scanned before
costs a lookup. So a ticket is also a ``Template``: the same thread with slots that a
sequence number fills, so that each number gives a text, and numbers that differ give
texts that differ, of the same length:

- every order number (``ORD-`` and 6 capital letters),
- one prose word every ``WORD_EVERY`` characters (6 small letters),
- every phone number, written as ``NPA-EXC-LINE``: each one of the text's phones has an
  area code of its own, the exchange and line (``200-0000`` to ``999-9999``) come from
  the number, so no phone number comes back within 8 million sequence numbers.

The letters are the number in base 26; nothing in a slot is a card, SSN, email, IBAN or
IP address, and every phone is a valid US number, so every rendering holds the same
findings (the bench checks a sample) and costs the detector the same work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, cast

from faker import Faker

SEED = 20240305
SMALL_CHARS = 1024
LARGE_CHARS = 10240
SYSTEM = "You are a helpful support assistant. Summarise the ticket and draft a reply."
# What the prompt must hold for the bench to mean something, and what it must not.
EXPECTED = frozenset({"EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE"})
BLOCKING = frozenset({"CREDIT_CARD", "US_SSN"})

LETTERS = 6  # base-26 digits in an order number and a word: 26**6 texts before they repeat
PHONES = 8_000_000  # exchanges 200-999 x lines 0000-9999
WORD_EVERY = 256
# One per phone number of a text (the 10 KB thread has 21), all valid US area codes,
# so that two phones of one text are never the same number.
AREA_CODES = (
    "201", "202", "203", "205", "206", "207", "208", "209", "210", "212", "213", "214",
    "215", "216", "217", "218", "219", "224", "225", "228", "229", "231", "234", "239",
    "240", "248", "251", "252", "253", "254", "256", "260", "262", "267", "269", "270",
)  # fmt: skip
Kind = Literal["ref", "word", "phone"]
WIDTH: dict[Kind, int] = {"ref": LETTERS, "word": LETTERS, "phone": 8}
_MARK = "\x00"  # around a slot's kind while a template is built: Faker writes no NUL
_MARKED = re.compile(f"{_MARK}(ref|word|phone){_MARK}")
# A word of prose: not a piece of an email address, a domain, a name or a hyphenated word.
_PROSE_WORD = re.compile(r"(?<![\w@.\-'])[a-z]{5,}(?![\w@.\-'])")
_NOT_PROSE = re.compile(f"[@\\d{_MARK}]")  # in a sentence: an email, a number, a slot


def _order(fake: Faker, slots: bool) -> str:
    number = fake.bothify("ORD-#####")  # drawn in both modes: the rest stays the same
    return f"ORD-{_MARK}ref{_MARK}" if slots else number


def _phone(fake: Faker, slots: bool) -> str:
    number = fake.phone_number()
    return f"{_MARK}phone{_MARK}" if slots else number


def _customer(fake: Faker, agent: str, slots: bool) -> str:
    name = fake.name()
    return (
        f"From: {name} <{fake.email()}>\n"
        f"Subject: {fake.catch_phrase()} - order {_order(fake, slots)}\n\n"
        f"Hello {agent},\n\n"
        f"I am writing about my order from {fake.date_this_year():%B %d}. "
        f"{fake.paragraph(nb_sentences=4)} "
        f"You can reach me at {_phone(fake, slots)} or write to {fake.email()}. "
        f"Please send the refund to my account {fake.iban()} at {fake.company()}. "
        f"{fake.paragraph(nb_sentences=3)}\n\n"
        f"Kind regards,\n{name}\n{fake.street_address()}, {fake.city()}\n\n"
    )


def _agent(fake: Faker, agent: str, slots: bool) -> str:
    return (
        f"From: {agent} <{fake.company_email()}>\n\n"
        f"Hi {fake.first_name()},\n\n"
        f"Thank you for getting in touch. {fake.paragraph(nb_sentences=3)} "
        f"If it is urgent, call our desk on {_phone(fake, slots)}. "
        f"{fake.paragraph(nb_sentences=2)}\n\n"
        f"Best,\n{agent}\n\n"
    )


def _messages(fake: Faker, slots: bool) -> Iterator[str]:
    agent = fake.first_name()
    while True:
        yield _customer(fake, agent, slots)
        yield _agent(fake, agent, slots)


def _thread(chars: int, seed: int, slots: bool) -> str:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    parts: list[str] = []
    size = 0
    for message in _messages(fake, slots):
        parts.append(message)
        size += len(message)
        if size >= chars:
            break
    return "".join(parts)


def ticket(chars: int, seed: int = SEED) -> str:
    """A ticket thread of exactly ``chars`` characters."""
    return _thread(chars, seed, slots=False)[:chars]


def letters(seq: int) -> str:
    """``seq`` in base 26, least significant first, as small letters."""
    out = []
    for _ in range(LETTERS):
        seq, digit = divmod(seq, 26)
        out.append(chr(ord("a") + digit))
    return "".join(out)


def fill(kind: Kind, seq: int) -> str:
    """What a slot of ``kind`` holds for sequence number ``seq`` (bench/pii/arms.py's Lua
    request builder writes the same)."""
    if kind == "word":
        return letters(seq)
    if kind == "ref":
        return letters(seq).upper()
    line = seq % PHONES
    return f"{200 + line // 10_000:03d}-{line % 10_000:04d}"


@dataclass(frozen=True)
class Template:
    """A ticket thread with slots: ``parts[0] + fill(kinds[0]) + parts[1] + ...``."""

    parts: tuple[str, ...]  # one more than kinds
    kinds: tuple[Kind, ...]

    def render(self, seq: int) -> str:
        out = [self.parts[0]]
        for kind, part in zip(self.kinds, self.parts[1:], strict=True):
            out += (fill(kind, seq), part)
        return "".join(out)

    def body(self, seq: int) -> bytes:
        return chat_body(self.render(seq))

    def body_parts(self) -> tuple[str, ...]:
        """``body(seq)`` as literal pieces around the slots: a slot's letters and digits
        need no JSON escaping, so the JSON of the text is the JSON of its parts."""
        envelope = chat_body(_MARK).decode()
        escaped_mark = json.dumps(_MARK)[1:-1]
        if envelope.count(escaped_mark) != 1:
            raise RuntimeError("the chat body's envelope holds the slot mark")
        head, tail = envelope.split(escaped_mark)
        pieces = [json.dumps(p)[1:-1] for p in self.parts]
        pieces[0] = head + pieces[0]
        pieces[-1] += tail
        return tuple(pieces)


def _mark_words(text: str) -> str:
    """Mark the first prose word at or after every ``WORD_EVERY`` characters, in a
    sentence with no contact data or slot: a word near a value may be one of its
    recognizer's context words, which change its score."""
    out: list[str] = []
    at = 0
    target = WORD_EVERY
    for match in _PROSE_WORD.finditer(text):
        if match.start() < target:
            continue
        begin = max(text.rfind(". ", 0, match.start()), text.rfind("\n", 0, match.start()))
        ends = [i for i in (text.find(". ", match.end()), text.find("\n", match.end())) if i >= 0]
        if _NOT_PROSE.search(text, begin + 1, min(ends, default=len(text))):
            continue
        out += (text[at : match.start()], f"{_MARK}word{_MARK}")
        at = match.end()
        target = match.end() + WORD_EVERY
    return "".join(out) + text[at:]


def template(chars: int, seed: int = SEED) -> Template:
    """The thread of ``ticket(chars, seed)``'s messages with its slots, cut so that every
    rendering is exactly ``chars`` characters long."""
    # Slots change the length (an order number gains a letter, a phone its own format),
    # so the thread is written longer than needed and cut once the slots are in.
    return _cut(_mark_words(_thread(chars + 512, seed, slots=True)), chars)


def _question(fake: Faker) -> str:
    """A user's question about a product and its code, with its sender's email address in
    one sentence: the shape of most prompts (prose, one piece of contact data at most)."""
    product = fake.catch_phrase()
    return (
        f"I have a question about {product} and the client library we use with it. "
        f"{fake.paragraph(nb_sentences=5)} "
        f"When we call the export function from our build script it returns an empty list. "
        f"{fake.paragraph(nb_sentences=5)} "
        # The local part is a slot, so every rendering's address is new: the detector
        # keeps no verdict for it (the domain stays, as a real team's would).
        f"Please reply to {fake.first_name().lower()}.{_MARK}word{_MARK}@"
        f"{fake.free_email_domain()} when you can. "
        f"{fake.paragraph(nb_sentences=6)} "
        f"Is there a setting we missed, or should we change how {product} is configured? "
        f"{fake.paragraph(nb_sentences=6)} {fake.paragraph(nb_sentences=6)}\n\n"
    )


PROMPT_EXPECTED = {"EMAIL_ADDRESS": 1}  # all a typical prompt may hold


def prompt_template(chars: int, seed: int = SEED) -> Template:
    """A typical prompt of exactly ``chars`` characters: prose with one email address,
    whose local part and a prose word every ``WORD_EVERY`` characters are slots."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    text = ""
    while len(text) < chars + 512:  # longer than needed: cut once the slots are in
        text += _question(fake)
    return _cut(_mark_words(text), chars)


def _cut(marked: str, chars: int) -> Template:
    """``marked`` (text with slot marks) as a Template of exactly ``chars`` characters."""
    items: list[tuple[Kind | None, str]] = []  # (None, literal text) or (kind, "")
    phones = 0
    for i, piece in enumerate(_MARKED.split(marked)):  # literal, kind, literal, ...
        if i % 2 == 0:
            items.append((None, piece))
            continue
        marked_kind = cast(Kind, piece)
        if marked_kind == "phone":
            if phones == len(AREA_CODES):
                raise ValueError(f"more than {len(AREA_CODES)} phone numbers in {chars}")
            items.append((None, f"{AREA_CODES[phones]}-"))
            phones += 1
        items.append((marked_kind, ""))
    parts, kinds, size = [""], list[Kind](), 0
    for slot, text in items:
        room = chars - size
        if slot is not None and WIDTH[slot] <= room:
            kinds.append(slot)
            parts.append("")
            size += WIDTH[slot]
            continue
        # A slot cut in two would not change with the number: its end stays fixed.
        literal = text if slot is None else fill(slot, 0)
        parts[-1] += literal[:room]
        size += len(literal[:room])
        if size == chars:
            break
    if size < chars:
        raise ValueError(f"the thread is too short for {chars} characters")
    return Template(tuple(parts), tuple(kinds))


def chat_body(prompt: str, model: str = "bench-model") -> bytes:
    """A chat completion request with ``prompt`` as the user's message."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": 32,
        "temperature": 0,
    }
    return json.dumps(body, separators=(",", ":")).encode()
