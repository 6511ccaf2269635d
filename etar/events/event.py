"""The interaction event, its Avro schema, and a generator of realistic shopping sessions.

Users browse in sessions that walk a funnel (page view → search → product view → cart →
checkout → purchase), dropping out at each step; every step can fail with a per-event-type
error rate. The generator is deterministic for a given seed, so tests can replay it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np
from fastavro import parse_schema

from etar import resources
from etar.errors import ConfigError
from etar.minute import Minute


class EventType(StrEnum):
    """Kinds of interaction, in funnel order (the Avro enum's symbols)."""

    PAGE_VIEW = "PAGE_VIEW"
    SEARCH = "SEARCH"
    PRODUCT_VIEW = "PRODUCT_VIEW"
    ADD_TO_CART = "ADD_TO_CART"
    REMOVE_FROM_CART = "REMOVE_FROM_CART"
    CHECKOUT = "CHECKOUT"
    PURCHASE = "PURCHASE"


class Status(StrEnum):
    """Outcome of an interaction."""

    SUCCESS = "SUCCESS"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Event:
    """One user interaction, field for field the Avro record ``UserInteraction``."""

    event_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    event_type: EventType
    status: Status
    device: str
    country: str
    page_url: str
    event_ts: datetime
    error_code: str | None = None
    error_message: str | None = None
    product_id: str | None = None
    price: float | None = None
    quantity: int | None = None
    currency: str | None = None
    search_query: str | None = None
    referrer: str | None = None

    def to_avro(self) -> dict[str, Any]:
        """The record as fastavro writes it (UUIDs as strings, enums as symbols).

        Built field by field: ``dataclasses.asdict`` would deep-copy every UUID and datetime.
        """
        record = {name: getattr(self, name) for name in _EVENT_FIELDS}
        record["event_id"] = str(self.event_id)
        record["user_id"] = str(self.user_id)
        record["session_id"] = str(self.session_id)
        record["event_type"] = self.event_type.value
        record["status"] = self.status.value
        return record

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Event:
        """Rebuild an event from a decoded Avro record (``event_ts`` a datetime or epoch ms)."""
        values = dict(record)
        for key in ("event_id", "user_id", "session_id"):
            values[key] = uuid.UUID(str(values[key]))
        values["event_type"] = EventType(values["event_type"])
        values["status"] = Status(values["status"])
        if isinstance(values["event_ts"], int):
            values["event_ts"] = from_millis(values["event_ts"])
        return cls(**values)


_EVENT_FIELDS = tuple(f.name for f in fields(Event))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_millis(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime (what Avro's timestamp-millis holds)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_millis(millis: int) -> datetime:
    """The UTC datetime of epoch milliseconds."""
    return _EPOCH + timedelta(milliseconds=millis)


def load_schema_str(path: Path | None = None) -> str:
    """Text of ``user_event_schema.avsc`` (what the serializer registers)."""
    if path is not None:
        return path.read_text(encoding="utf-8")
    return resources.text(resources.EVENT_SCHEMA)


def schema_fields() -> list[dict[str, Any]]:
    """The event's Avro fields, in schema order (the source of every column list)."""
    fields: list[dict[str, Any]] = json.loads(load_schema_str())["fields"]
    return fields


def schema_field_names() -> tuple[str, ...]:
    return tuple(field["name"] for field in schema_fields())


@lru_cache
def parsed_schema() -> dict[str, Any]:
    """The event schema parsed by fastavro (logical types resolved)."""
    schema = parse_schema(json.loads(load_schema_str()))
    assert isinstance(schema, dict)
    return schema


# --- generator -------------------------------------------------------------------------------

_ERROR_CODES: dict[EventType, list[tuple[str, str]]] = {
    EventType.PAGE_VIEW: [("HTTP_500", "internal server error"), ("HTTP_504", "upstream timeout")],
    EventType.SEARCH: [("SEARCH_TIMEOUT", "search backend timed out")],
    EventType.PRODUCT_VIEW: [("PRODUCT_NOT_FOUND", "product no longer listed")],
    EventType.ADD_TO_CART: [("OUT_OF_STOCK", "item out of stock"), ("CART_LIMIT", "cart is full")],
    EventType.REMOVE_FROM_CART: [("CART_CONFLICT", "cart changed in another tab")],
    EventType.CHECKOUT: [("ADDRESS_INVALID", "shipping address rejected")],
    EventType.PURCHASE: [
        ("PAYMENT_DECLINED", "card declined by issuer"),
        ("PAYMENT_TIMEOUT", "payment provider timed out"),
    ],
}
# Probability of moving from one step to the next; the rest of the mass ends the session.
_FUNNEL: dict[EventType, list[tuple[EventType, float]]] = {
    EventType.PAGE_VIEW: [(EventType.SEARCH, 0.45), (EventType.PRODUCT_VIEW, 0.35),
                          (EventType.PAGE_VIEW, 0.1)],
    EventType.SEARCH: [(EventType.PRODUCT_VIEW, 0.7), (EventType.SEARCH, 0.15)],
    EventType.PRODUCT_VIEW: [(EventType.ADD_TO_CART, 0.35), (EventType.PRODUCT_VIEW, 0.3),
                             (EventType.SEARCH, 0.15)],
    EventType.ADD_TO_CART: [(EventType.CHECKOUT, 0.45), (EventType.PRODUCT_VIEW, 0.3),
                            (EventType.REMOVE_FROM_CART, 0.1)],
    EventType.REMOVE_FROM_CART: [(EventType.PRODUCT_VIEW, 0.5), (EventType.CHECKOUT, 0.2)],
    EventType.CHECKOUT: [(EventType.PURCHASE, 0.75)],
    EventType.PURCHASE: [],
}
_DEVICES = (("DESKTOP", 0.45), ("MOBILE", 0.45), ("TABLET", 0.10))
_COUNTRIES = ("US", "DE", "FR", "GB", "PL", "ES", "IT", "NL", "SE", "BR", "IN", "JP")
_CURRENCY = {"US": "USD", "GB": "GBP", "SE": "SEK", "PL": "PLN", "BR": "BRL", "IN": "INR",
             "JP": "JPY"}
_QUERIES = ("running shoes", "usb-c cable", "coffee grinder", "rain jacket", "desk lamp",
            "headphones", "yoga mat", "backpack", "phone case", "water bottle")


def uniform_error_rates(rate: float) -> dict[EventType, float]:
    """The same error rate for every event type."""
    return {event_type: rate for event_type in EventType}


@dataclass
class GeneratorConfig:
    """How the generator behaves; ``error_rates`` maps each event type to P(status=ERROR)."""

    seed: int | None = None
    users: int = 500
    products: int = 200
    concurrent_sessions: int = 40
    error_rates: dict[EventType, float] = field(default_factory=lambda: uniform_error_rates(0.05))

    def __post_init__(self) -> None:
        for event_type, rate in self.error_rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"error rate for {event_type} must be within [0, 1], got {rate}")
        missing = set(EventType) - set(self.error_rates)
        if missing:
            raise ConfigError(f"error_rates lacks {sorted(missing)}")
        if self.users < 1 or self.products < 1 or self.concurrent_sessions < 1:
            raise ConfigError("users, products and concurrent_sessions must be positive")


@dataclass(frozen=True, slots=True, eq=False)
class User:
    """A simulated shopper; hashed by identity, so writers can cache what they derive."""

    id_text: str
    key: bytes
    """The Kafka key: the user id's 16 bytes."""
    device: str
    country: str
    currency: str


Product = tuple[str, float, str]
"""Product id, unit price, page URL."""


@dataclass(slots=True)
class _Session:
    user: User
    session_id: str
    next_step: EventType | None = EventType.PAGE_VIEW
    product: Product | None = None
    cart: list[Product] = field(default_factory=list)
    last_url: str | None = None


def utc_now() -> datetime:
    """The current time, UTC, at millisecond precision (what Avro keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def now_millis() -> int:
    """The current time in epoch milliseconds (``utc_now`` without a datetime)."""
    return time.time_ns() // 1_000_000


class MinuteClock:
    """A clock that stamps events at random instants inside ``minute``.

    Called, it gives a datetime; ``millis()`` gives the same draw as epoch milliseconds (what
    the generator uses, so no datetime is built per event).
    """

    def __init__(self, minute: Minute, rng: random.Random) -> None:
        self.minute = minute
        self._start_ms = to_millis(minute.start)
        self._rng = rng

    def millis(self) -> int:
        return self._start_ms + int(self._rng.random() * 60_000)

    def __call__(self) -> datetime:
        return from_millis(self.millis())


def clock_within_minute(minute: Minute, rng: random.Random) -> MinuteClock:
    """A clock that stamps events at random instants inside ``minute``."""
    return MinuteClock(minute, rng)


def _millis_clock(clock: Callable[[], datetime]) -> Callable[[], int]:
    if clock is utc_now:
        return now_millis
    if isinstance(clock, MinuteClock):
        return clock.millis
    return lambda: to_millis(clock())


# uuid.UUID(int=bits, version=4) without building a UUID: clear then set variant and version.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_ID_DIGIT_COLUMNS = [column for column in range(36) if column not in (8, 13, 18, 23)]
ID_TEXT_SIZE = 36
"""Characters of a UUID's text form (hex digits and four dashes)."""
_FIXED_URLS = {EventType.CHECKOUT: "/checkout", EventType.PURCHASE: "/checkout/confirm"}
_PAGES = ("/", "/deals", "/new", "/category/home", "/category/sport")
_SEARCH_URLS = {query: f"/search?q={query.replace(' ', '+')}" for query in _QUERIES}
_CART_STEPS = (EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART)
_PAY_STEPS = (EventType.CHECKOUT, EventType.PURCHASE)
_SUCCESS, _ERROR = Status.SUCCESS.value, Status.ERROR.value
# The funnel as cumulative thresholds: a draw below the first goes to its step, and so on.
_THRESHOLDS = {event_type: list(zip([step for step, _ in steps],
                                    accumulate(p for _, p in steps), strict=True))
               for event_type, steps in _FUNNEL.items()}


def _outcomes() -> tuple[list[tuple[str, str, str | None, str | None]], dict[EventType, int]]:
    """Every (event type, status, error code, error message) an event can have, and the index
    of each type's success; its errors follow it, in ``_ERROR_CODES`` order."""
    outcomes: list[tuple[str, str, str | None, str | None]] = []
    success: dict[EventType, int] = {}
    for event_type in EventType:
        success[event_type] = len(outcomes)
        outcomes.append((event_type.value, _SUCCESS, None, None))
        outcomes.extend((event_type.value, _ERROR, code, message)
                        for code, message in _ERROR_CODES[event_type])
    return outcomes, success


OUTCOMES, _SUCCESS_OUTCOME = _outcomes()
"""(event_type, status, error_code, error_message) by outcome index (a :data:`Step`'s third)."""

KeyedRecord = tuple[bytes, dict[str, Any]]
"""An event as the producer sends it: the Kafka key and the Avro record (``to_avro`` form,
``event_ts`` in epoch milliseconds)."""

Step = tuple[
    "User", str, int, "Product | None", "int | None", "str | None", str, "str | None", int]
"""One event as the generator draws it, before it is written out: its user, session id,
outcome (an index into :data:`OUTCOMES`), product (with the user's currency when set),
quantity, search query, page URL, referrer and ``event_ts`` in epoch milliseconds. The event
id comes apart, from a stream of its own (:meth:`EventGenerator.steps`)."""


class EventGenerator:
    """Endless stream of events from interleaved shopping sessions.

    Iterating gives :class:`Event` objects; ``records(n)`` gives the same stream as keyed Avro
    records without building them; ``steps(n)`` gives it as the generator's draws, which
    :class:`etar.events.serde.EventValueWriter` writes straight to wire values (what the producer
    sends). The event ids are drawn from a random stream of their own, a batch at a time, so
    the stream is the same whatever the batch sizes.
    """

    def __init__(
        self, config: GeneratorConfig | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.config = config or GeneratorConfig()
        seed = self.config.seed
        self._rng = random.Random(seed)
        self._id_rng = random.Random(None if seed is None else f"{seed}/event-ids")
        self._random = self._rng.random
        self._millis = _millis_clock(clock)
        self._error_rates = dict(self.config.error_rates)
        self._users = [self._new_user() for _ in range(self.config.users)]
        self._products: list[Product] = []
        for index in range(self.config.products):
            product_id = f"P{index:05d}"
            price = round(self._rng.uniform(2.0, 400.0), 2)
            self._products.append((product_id, price, f"/product/{product_id}"))
        self._sessions = [self._new_session() for _ in range(self.config.concurrent_sessions)]

    def _uuid(self) -> str:
        """A random version-4 UUID in text form."""
        digits = (self._rng.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET).to_bytes(16).hex()
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

    def event_ids(self, count: int) -> bytes:
        """The next ``count`` event ids: random version-4 UUIDs in text form (ASCII), each
        :data:`ID_TEXT_SIZE` bytes, back to back. Drawn and formatted as one array."""
        raw = np.frombuffer(bytearray(self._id_rng.getrandbits(128 * count).to_bytes(
            16 * count, "little")), np.uint8).reshape(count, 16)
        raw[:, 6] = raw[:, 6] & 0x0F | 0x40  # version 4
        raw[:, 8] = raw[:, 8] & 0x3F | 0x80  # RFC 4122 variant
        text = np.full((count, ID_TEXT_SIZE), ord("-"), np.uint8)
        text[:, _ID_DIGIT_COLUMNS[0::2]] = _HEX_DIGITS[raw >> 4]
        text[:, _ID_DIGIT_COLUMNS[1::2]] = _HEX_DIGITS[raw & 0x0F]
        return text.tobytes()

    def _new_user(self) -> User:
        device = self._rng.choices([d for d, _ in _DEVICES], [w for _, w in _DEVICES])[0]
        user_id = self._uuid()
        country = self._rng.choice(_COUNTRIES)
        return User(user_id, uuid.UUID(user_id).bytes, device, country,
                    _CURRENCY.get(country, "EUR"))

    def _new_session(self) -> _Session:
        users = self._users
        return _Session(user=users[int(self._random() * len(users))], session_id=self._uuid())

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return Event.from_avro(self.next_record()[1])

    def take(self, count: int) -> list[Event]:
        """The next ``count`` events."""
        return [next(self) for _ in range(count)]

    def next_record(self) -> KeyedRecord:
        """The next event as the producer sends it."""
        return self.records(1)[0]

    def records(self, count: int) -> list[KeyedRecord]:
        """The next ``count`` events as keyed Avro records."""
        ids = self.event_ids(count).decode("ascii")
        size = ID_TEXT_SIZE
        return [(step[0].key, step_record(step, ids[i * size:(i + 1) * size]))
                for i, step in enumerate(self.steps(count))]

    def steps(self, count: int) -> list[Step]:
        """The next ``count`` events as the generator's draws; their ids are the next
        ``event_ids(count)``."""
        sessions, random, new_session = self._sessions, self._random, self._new_session
        step = self._step
        out = []
        for _ in range(count):
            slot = int(random() * len(sessions))
            session = sessions[slot]
            out.append(step(session))
            if session.next_step is None:
                sessions[slot] = new_session()
        return out

    def _step(self, session: _Session) -> Step:
        random = self._random  # draws are indexes as int(random() * n): no Python frames
        user = session.user
        event_type = session.next_step or EventType.PAGE_VIEW
        failed = random() < self._error_rates[event_type]
        product = quantity = search_query = None
        if event_type is EventType.SEARCH:
            search_query = _QUERIES[int(random() * len(_QUERIES))]
            url = _SEARCH_URLS[search_query]
        elif event_type is EventType.PAGE_VIEW:
            url = _PAGES[int(random() * len(_PAGES))]
        else:
            if event_type is EventType.PRODUCT_VIEW or session.product is None:
                session.product = self._products[int(random() * len(self._products))]
            product = session.product
            if event_type is EventType.REMOVE_FROM_CART and session.cart:
                product = session.cart[-1]
            url = product[2]
            if event_type in _CART_STEPS:
                quantity = 1 + int(random() * 3)
            elif event_type in _PAY_STEPS:
                quantity = max(1, len(session.cart))
                url = _FIXED_URLS[event_type]
        outcome = _SUCCESS_OUTCOME[event_type]
        if failed:
            outcome += 1 + int(random() * len(_ERROR_CODES[event_type]))
        referrer = session.last_url
        self._advance(session, event_type, failed)
        session.last_url = url
        return (user, session.session_id, outcome, product, quantity, search_query, url,
                referrer, self._millis())

    def _advance(self, session: _Session, event_type: EventType, failed: bool) -> None:
        """Pick the session's next step, or end it (None)."""
        if not failed and session.product is not None:
            if event_type is EventType.ADD_TO_CART:
                session.cart.append(session.product)
            elif event_type is EventType.REMOVE_FROM_CART and session.cart:
                session.cart.pop()
        if failed and event_type in _PAY_STEPS:
            # A failed payment or address is retried once in a while, else abandoned.
            session.next_step = event_type if self._random() < 0.4 else None
            return
        draw = self._random()
        for next_type, threshold in _THRESHOLDS[event_type]:
            if draw < threshold:
                if next_type is EventType.CHECKOUT and not session.cart:
                    next_type = EventType.PRODUCT_VIEW
                session.next_step = next_type
                return
        session.next_step = None


def step_record(step: Step, event_id: str) -> dict[str, Any]:
    """The Avro record (``to_avro`` form, ``event_ts`` in epoch milliseconds) of a step."""
    user, session_id, outcome, product, quantity, search_query, url, referrer, millis = step
    event_type, status, error_code, error_message = OUTCOMES[outcome]
    product_id, price, currency = (None, None, None) if product is None else (
        product[0], product[1], user.currency)
    return {
        "event_id": event_id, "user_id": user.id_text, "session_id": session_id,
        "event_type": event_type, "status": status, "error_code": error_code,
        "error_message": error_message, "product_id": product_id, "price": price,
        "quantity": quantity, "currency": currency, "search_query": search_query,
        "device": user.device, "country": user.country, "page_url": url, "referrer": referrer,
        "event_ts": millis,
    }
