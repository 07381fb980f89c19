"""A labelled set for the ``pii`` detector's pattern types, generated with Faker.

Each example is a realistic prompt (a support ticket, an email to draft, a chat
question, a log line or a filled-in form) with the values it embeds and their
character spans::

    Example(text="Is mia@example.org a valid address?", spans=[("EMAIL_ADDRESS", 3, 18)])

What is labelled, and in which forms:

- EMAIL_ADDRESS: Faker's ``email``, ``company_email`` and ``free_email``, alone or
  as ``Name <address>``.
- PHONE_NUMBER: numbers valid for libphonenumber in the US, the UK and Germany,
  written as people write them: ``(415) 555-2671``, ``415-555-2671``,
  ``415.555.2671``, ``+1 415 555 2671``, ``+1 (415) 555-2671``, ``+44 20 7946 0958``,
  ``+44 (0)20 7946 0958``, ``020 7946 0958``, ``+49 30 901820``, ``030 901820``,
  ``030/901820``, ``+14155552671``. Bare digit runs (``4155552671``,
  ``02079460958``) appear only with a word such as "phone", "call" or "mobile"
  among the five words before them, the only place the detector reports them.
- CREDIT_CARD: Faker's Visa, Mastercard (both the 51-55 and the 2221-2720
  ranges), American Express and Discover numbers, compact or in groups (4-4-4-4,
  Amex 4-6-5) separated by spaces or dashes.
- IBAN_CODE: Faker's IBANs for GB, DE, FR, ES, NL, IT, PL and AT, compact or in
  groups of four.
- US_SSN: Faker's ``ssn`` (dashed), after "SSN" or "social security" in some
  templates and with no such word in others.
- IP_ADDRESS: public and private IPv4 addresses, sometimes with a port, and IPv6.

Look-alikes, never labelled, in the positive templates as well as in examples
of their own (about a quarter of the set): version numbers (``3.0.0-rc2``,
``v2.14.1``, Windows and Chrome builds, kernel releases such as
``5.15.0-105-generic``), order, invoice and ticket numbers (``ORD-2024-558812``,
``order 4829173650``, ``#58213``), dates (``2024-03-05``, ``05/03/2024``,
``March 5, 2024``, ``05.03.2024``), times and log timestamps
(``2024-03-05 14:30:12``), ZIP and postcodes (``94105``, ``94105-1234``,
``SW1A 1AA``), prices, percentages, build numbers (``20240305.1``), line
numbers, counts, ports, card expiry dates and request UUIDs. No template puts a
phone word ("call", "phone", "contact" …) before a look-alike: a bare digit run
after such a word is a phone number as far as the detector can tell.

The set is a function of its size and seed alone (``Faker.seed_instance`` and a
seeded ``random.Random``), so a run can be repeated and two runs compared.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import phonenumbers
from faker import Faker

LABELS = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS")
TEXT_LOCALES = ("en_US", "en_GB", "de_DE")
IBAN_LOCALES = ("en_GB", "de_DE", "fr_FR", "es_ES", "nl_NL", "it_IT", "pl_PL", "de_AT")
NEGATIVE_SHARE = 0.25
# The words a bare phone number's template puts among the five words before it.
PHONE_WORDS = frozenset({"phone", "call", "mobile", "tel", "whatsapp", "cell"})

Span = tuple[str, int, int]
Value = tuple[str, str | None]  # the text, and its label (None: a look-alike)


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    spans: list[Span]


# Templates name the values they embed: {email}, {phone}, {phone_bare}, {card},
# {iban}, {ssn} and {ip} are labelled; every other field is a look-alike or filler.
POSITIVE_TEMPLATES: tuple[str, ...] = (
    # support tickets
    "Ticket {ticket}: customer {name} ({email}) reports that the export fails since "
    "version {version}. Please ring back on {phone}.",
    "Support request from {name}, {company}. Order {order} arrived damaged on {date}. "
    "You can reach me at {email} or {phone}.",
    "Hi, my card {card} was charged twice for order {order} ({price}). Can you refund it?",
    "The refund should go to IBAN {iban}, account holder {name}. Reference {order}.",
    "Customer {name} says the SSN on her application, {ssn}, was rejected on {date}.",
    "User cannot log in from {ip} since {date} {time}; the account is {email}.",
    "Escalation {ticket}: payment with card {card} failed at {time}, {percent} of retries "
    "time out.",
    # emails to draft
    "Draft an email to {email} confirming the meeting on {date} at {time}. Sign it with my "
    "direct line {phone}.",
    "Write a polite reminder to {name} <{email}> that invoice {order} of {price} is overdue; "
    "they can pay to {iban}.",
    "Please write to {email} and cc {email}: release {version} ships on {date}.",
    "Compose a reply to {name}: we received the transfer from {iban} and will ship order "
    "{order} by {date}.",
    "Draft a letter for HR: employee {name}, social security number {ssn}, start date {date}.",
    "Write an email to the bank asking why the payment from {iban} to {iban} on {date} was "
    "returned.",
    # chat questions
    "Is {email} a valid address for the registration form?",
    "Why does my mobile {phone_bare} not receive the verification code?",
    "My SSN is {ssn}; which W-2 form do I need for {date}?",
    "Can you check whether the IP {ip} is in our VPN range?",
    "I paid {price} with {card} but the shop says the payment was declined. What now?",
    "What's the cheapest way to ring {phone} from abroad?",
    "Please call me on {phone_bare} after {time}.",
    "Which country does {iban} belong to?",
    "How do I block traffic from {ip} and {ip} in nginx?",
    "Can you fill in this W-4 for me: {ssn}, {name}, {city}?",
    "Here is everything for the booking: {name}, {email}, {phone}, card {card}.",
    # log lines
    "{stamp} INFO login ok user={email} ip={ip} build={build}",
    "{stamp} WARN payment declined card={card} amount={price} order={order}",
    "{stamp} ERROR sms gateway could not deliver to {phone} (retry {count}/5)",
    '{ip} - - [{stamp}] "GET /api/orders HTTP/1.1" 200 {count}',
    "{stamp} DEBUG sepa transfer iban={iban} status=queued req={uuid}",
    "{stamp} WARN kyc check failed ssn={ssn} reason=mismatch",
    "{stamp} INFO sshd: connection from {ip} port {port} closed after {count} ms",
    # forms
    "Name: {name}\nEmail: {email}\nPhone: {phone}\nCity: {city} {zip}",
    "Full name: {name}\nSSN: {ssn}\nDate of birth: {date}\nZIP: {zip}",
    "Payment details\nCard number: {card}\nExpiry: {expiry}\nAmount: {price}",
    "Beneficiary: {company}\nIBAN: {iban}\nAmount: {price}\nReference: {order}",
    "Contact form: name={name}; mobile={phone_bare}; email={email}; sent {date} {time}",
    "Server: web-{count}\nPublic IP: {ip}\nAdmin: {email}\nKernel: {version}",
    "Employee onboarding\nName: {name}\nSocial security: {ssn}\nIBAN: {iban}\nWork phone: {phone}",
    "Shipping for order {order}\n{name}, {city} {zip}\nTel.: {phone}",
)

NEGATIVE_TEMPLATES: tuple[str, ...] = (
    "Upgrade from {version} to {version} before {date}; the changelog lists {count} fixes.",
    "Order {order} shipped on {date} at {time}; ticket {ticket} can be closed.",
    "{stamp} INFO build {build} finished in {count}s, coverage {percent}",
    'Traceback: File "app/models.py", line {line}, in save (version {version})',
    "The invoice {order} totals {price} and is due on {date}.",
    "Ship to {city} {zip} by {date}; the parcel weighs {count} kg.",
    "Sales grew {percent} in {year}, to {price} per unit.",
    "Request {uuid} took {count} ms on build {build} ({version}).",
    "The meeting moved to {date}, {time}, room {count}.",
    "{stamp} ERROR worker crashed on {version}, restarting in {count}s",
    "Opening hours are {time} to {time}, Monday to Friday, {city} {zip}.",
    "Deploy {version} to staging at {time} on {date}; roll back to {version} if the error "
    "rate exceeds {percent}.",
    "Your order {order} of {date} for {price} has been received. Tracking: {tracking}.",
    "ZIP {zip} is outside our delivery area; the nearest depot is in {city}.",
    "Card expiry {expiry}, CVV on the back; the total of order {order} is {price}.",
)

# The shapes of valid national numbers per region: a prefix, then random digits up
# to one of the lengths (libphonenumber has the last word: invalid draws are redrawn).
_PHONE_SHAPES: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {
    "US": (("", (10,)),),
    "GB": (("20", (10,)), ("7", (10,)), ("161", (10,)), ("121", (10,)), ("131", (10,))),
    "DE": (
        ("30", (8, 9, 10)),
        ("40", (9, 10)),
        ("89", (9, 10)),
        ("69", (9, 10)),
        ("221", (9, 10)),
        ("151", (11,)),
        ("160", (10, 11)),
        ("176", (11,)),
    ),
}
_CARD_GROUPS = {"amex": (4, 6, 5)}
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


class _Values:
    """The value for each template field, drawn for one example."""

    def __init__(self, fake: Faker, rng: random.Random) -> None:
        self.fake = fake
        self.rng = rng
        self.locale = rng.choice(TEXT_LOCALES)
        self.makers: dict[str, Callable[[], Value]] = {
            "email": self.email,
            "phone": self.phone,
            "phone_bare": self.phone_bare,
            "card": self.card,
            "iban": self.iban,
            "ssn": self.ssn,
            "ip": self.ip,
            "version": lambda: (self.version(), None),
            "order": lambda: (self.order(), None),
            "date": lambda: (self.date(), None),
            "stamp": lambda: (self.stamp(), None),
            "zip": lambda: (self.zip(), None),
            "price": lambda: (self.price(), None),
            "ticket": lambda: (self.ticket(), None),
            "time": lambda: (self.time(), None),
            "build": lambda: (f"{self.day():%Y%m%d}.{rng.randint(1, 40)}", None),
            "percent": lambda: (f"{rng.uniform(0.1, 99):.1f}%", None),
            "expiry": lambda: (f"{rng.randint(1, 12):02d}/{rng.randint(25, 33)}", None),
            "count": lambda: (str(rng.randint(1, 900)), None),
            "line": lambda: (str(rng.randint(1, 5000)), None),
            "port": lambda: (str(rng.randint(1024, 65535)), None),
            "year": lambda: (str(rng.randint(2015, 2026)), None),
            "uuid": lambda: (str(self.fake.uuid4()), None),
            "tracking": lambda: (self.fake.bothify("1Z###??##########").upper(), None),
            "name": lambda: (self.fake[self.locale].name(), None),
            "company": lambda: (self.fake[self.locale].company(), None),
            "city": lambda: (self.fake[self.locale].city(), None),
        }

    def make(self, field: str) -> Value:
        return self.makers[field]()

    # labelled values

    def email(self) -> Value:
        local = self.fake[self.locale]
        draw = self.rng.choice((local.email, local.company_email, local.free_email))
        return draw(), "EMAIL_ADDRESS"

    def phone(self) -> Value:
        region = self.rng.choice(tuple(_PHONE_SHAPES))
        number = self._valid_number(region)
        return self.rng.choice(_phone_styles(number, region)), "PHONE_NUMBER"

    def phone_bare(self) -> Value:
        region = self.rng.choice(tuple(_PHONE_SHAPES))
        number = self._valid_number(region)
        national = str(number.national_number)
        return (national if region == "US" else "0" + national), "PHONE_NUMBER"

    def card(self) -> Value:
        kind = self.rng.choice(("visa", "mastercard", "amex", "discover"))
        digits = self.fake["en_US"].credit_card_number(card_type=kind)
        separator = self.rng.choice(("", " ", "-"))
        if not separator:
            return digits, "CREDIT_CARD"
        return separator.join(_groups(digits, _CARD_GROUPS.get(kind, (4, 4, 4, 4)))), "CREDIT_CARD"

    def iban(self) -> Value:
        compact = self.fake[self.rng.choice(IBAN_LOCALES)].iban()
        if self.rng.random() < 0.5:
            return compact, "IBAN_CODE"
        return " ".join(_groups(compact, (4,) * 9)), "IBAN_CODE"

    def ssn(self) -> Value:
        return self.fake["en_US"].ssn(), "US_SSN"

    def ip(self) -> Value:
        draw = self.rng.choices(
            (self.fake.ipv4_public, self.fake.ipv4_private, self.fake.ipv6), weights=(4, 4, 2)
        )[0]
        return draw(), "IP_ADDRESS"

    def _valid_number(self, region: str) -> phonenumbers.PhoneNumber:
        for _ in range(1000):
            prefix, lengths = self.rng.choice(_PHONE_SHAPES[region])
            length = self.rng.choice(lengths)
            tail = "".join(self.rng.choice(string.digits) for _ in range(length - len(prefix)))
            try:
                number = phonenumbers.parse(prefix + tail, region)
            except phonenumbers.NumberParseException:
                continue  # a draw such as 00… reads as an international prefix
            if phonenumbers.is_valid_number(number):
                return number
        raise RuntimeError(f"no valid {region} number in 1000 draws; check _PHONE_SHAPES")

    # look-alikes

    def version(self) -> str:
        rng = self.rng
        a, b, c = rng.randint(0, 12), rng.randint(0, 30), rng.randint(0, 20)
        return rng.choice(
            (
                f"{a}.{b}.{c}",
                f"v{a}.{b}.{c}",
                f"{a}.{b}.{c}-rc{rng.randint(1, 5)}",
                f"{a}.{b}.{c}-beta.{rng.randint(1, 9)}",
                f"10.0.{rng.randint(19041, 22631)}.{rng.randint(100, 4000)}",
                f"{rng.randint(100, 130)}.0.{rng.randint(4000, 6999)}.{rng.randint(10, 200)}",
                f"{rng.randint(5, 6)}.{rng.randint(1, 19)}.0-{rng.randint(10, 199)}-generic",
            )
        )

    def order(self) -> str:
        rng = self.rng
        year = rng.randint(2019, 2026)
        return rng.choice(
            (
                f"ORD-{year}-{rng.randint(0, 999999):06d}",
                str(rng.randint(10**9, 10**10 - 1)),
                f"INV-{year}-{rng.randint(0, 999999):06d}",
                f"#{rng.randint(10000, 9999999)}",
            )
        )

    def ticket(self) -> str:
        rng = self.rng
        return rng.choice(
            (
                f"#{rng.randint(10000, 99999)}",
                f"INC{rng.randint(0, 9999999):07d}",
                f"TCK-{rng.randint(10000, 99999)}",
            )
        )

    def day(self) -> date:
        return self.fake.date_between(start_date=date(2020, 1, 1), end_date=date(2027, 12, 31))

    def date(self) -> str:
        d = self.day()
        return self.rng.choice(
            (
                d.isoformat(),
                f"{d:%d/%m/%Y}",
                f"{d:%m/%d/%Y}",
                f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
                f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
                f"{d:%d.%m.%Y}",
            )
        )

    def time(self) -> str:
        hour, minute = self.rng.randint(0, 23), self.rng.randint(0, 59)
        if self.rng.random() < 0.7:
            return f"{hour:02d}:{minute:02d}"
        return f"{hour % 12 or 12}:{minute:02d} {'pm' if hour >= 12 else 'am'}"

    def stamp(self) -> str:
        d, rng = self.day(), self.rng
        clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        return rng.choice(
            (
                f"{d.isoformat()} {clock}",
                f"{d.isoformat()} {clock},{rng.randint(0, 999):03d}",
                f"{d.isoformat()}T{clock}Z",
                f"{d:%d/%b/%Y}:{clock} +0000",
            )
        )

    def zip(self) -> str:
        draw = self.rng.choice(
            (
                self.fake["en_US"].zipcode,
                self.fake["en_US"].zipcode_plus4,
                self.fake["en_GB"].postcode,
                self.fake["de_DE"].postcode,
            )
        )
        return str(draw())

    def price(self) -> str:
        amount = self.rng.uniform(1, 5000)
        return self.rng.choice(
            (
                f"${amount:,.2f}",
                f"€{amount:.2f}",
                f"£{amount:,.2f}",
                f"{amount:,.2f} €".replace(",", " ").replace(".", ","),
                f"EUR {amount:.2f}",
            )
        )


def _phone_styles(number: phonenumbers.PhoneNumber, region: str) -> tuple[str, ...]:
    """The ways ``number`` is commonly written in ``region`` (and from abroad)."""
    fmt = phonenumbers.PhoneNumberFormat
    international = phonenumbers.format_number(number, fmt.INTERNATIONAL)
    national = phonenumbers.format_number(number, fmt.NATIONAL)
    e164 = phonenumbers.format_number(number, fmt.E164)
    if region == "US":
        digits = str(number.national_number)
        area, exchange, line = digits[:3], digits[3:6], digits[6:]
        return (
            national,  # (415) 555-2671
            f"{area}-{exchange}-{line}",
            f"{area}.{exchange}.{line}",
            f"+1 {area} {exchange} {line}",
            f"+1 ({area}) {exchange}-{line}",
            international,  # +1 415-555-2671
            e164,
        )
    code = international.split(" ", 1)[0]
    styles = (international, national, f"{code} (0){national[1:]}", e164)
    if region == "DE":
        # German numbers are also written with a slash after the area code.
        return (*styles, national.replace(" ", "/", 1))
    return styles


def _groups(value: str, sizes: Iterable[int]) -> list[str]:
    out, at = [], 0
    for size in sizes:
        if at >= len(value):
            break
        out.append(value[at : at + size])
        at += size
    if at < len(value):
        out.append(value[at:])
    return out


def render(template: str, values: _Values) -> Example:
    """The template with each field replaced by a drawn value, and the labelled spans."""
    parts: list[str] = []
    spans: list[Span] = []
    at = 0
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        at += len(literal)
        if field is None:
            continue
        value, label = values.make(field)
        if label is not None:
            spans.append((label, at, at + len(value)))
        parts.append(value)
        at += len(value)
    return Example("".join(parts), spans)


def generate(n: int, seed: int = 7) -> list[Example]:
    """``n`` examples, the same ones for the same ``n`` and ``seed``."""
    fake = Faker(list(dict.fromkeys(TEXT_LOCALES + IBAN_LOCALES)))
    fake.seed_instance(seed)
    # Only picks templates and formats: reproducibility matters here, not secrecy.
    rng = random.Random(seed)  # noqa: S311
    out = []
    for _ in range(n):
        negative = rng.random() < NEGATIVE_SHARE
        template = rng.choice(NEGATIVE_TEMPLATES if negative else POSITIVE_TEMPLATES)
        out.append(render(template, _Values(fake, rng)))
    return out


def write_jsonl(path: Path | str, n: int, seed: int = 7) -> None:
    """The set as JSON lines: ``{"text": ..., "spans": [[label, start, end], ...]}``."""
    with Path(path).open("w", encoding="utf-8") as out:
        for example in generate(n, seed):
            record = {"text": example.text, "spans": [list(s) for s in example.spans]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path | str) -> list[Example]:
    examples = []
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                spans = [(str(label), int(s), int(e)) for label, s, e in record["spans"]]
                examples.append(Example(record["text"], spans))
    return examples
