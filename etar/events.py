"""The interaction event, its Avro schema, and a generator of realistic shopping sessions.

Users browse in sessions that walk a funnel (page view → search → product view → cart →
checkout → purchase), dropping out at each step; every step can fail with a per-event-type
error rate. The generator is deterministic for a given seed, so tests can replay it.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

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
        """The record as fastavro writes it (UUIDs as strings, enums as symbols)."""
        record = asdict(self)
        for key in ("event_id", "user_id", "session_id"):
            record[key] = str(record[key])
        record["event_type"] = self.event_type.value
        record["status"] = self.status.value
        return record

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Event:
        """Rebuild an event from a decoded Avro record."""
        values = dict(record)
        for key in ("event_id", "user_id", "session_id"):
            values[key] = uuid.UUID(str(values[key]))
        values["event_type"] = EventType(values["event_type"])
        values["status"] = Status(values["status"])
        return cls(**values)


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


@dataclass(frozen=True, slots=True)
class _User:
    user_id: uuid.UUID
    device: str
    country: str


@dataclass(slots=True)
class _Session:
    user: _User
    session_id: uuid.UUID
    next_step: EventType | None = EventType.PAGE_VIEW
    product: tuple[str, float] | None = None
    cart: list[tuple[str, float]] = field(default_factory=list)
    last_url: str | None = None


def utc_now() -> datetime:
    """The current time, UTC, at millisecond precision (what Avro keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def clock_within_minute(minute: Minute, rng: random.Random) -> Callable[[], datetime]:
    """A clock that stamps events at random instants inside ``minute``."""
    return lambda: minute.start + timedelta(milliseconds=rng.randrange(60_000))


class EventGenerator:
    """Endless stream of events from interleaved shopping sessions."""

    def __init__(
        self, config: GeneratorConfig | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.config = config or GeneratorConfig()
        self._rng = random.Random(self.config.seed)
        self._clock = clock
        self._users = [self._new_user() for _ in range(self.config.users)]
        self._products = [
            (f"P{index:05d}", round(self._rng.uniform(2.0, 400.0), 2))
            for index in range(self.config.products)
        ]
        self._sessions = [self._new_session() for _ in range(self.config.concurrent_sessions)]

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def _new_user(self) -> _User:
        device = self._rng.choices([d for d, _ in _DEVICES], [w for _, w in _DEVICES])[0]
        return _User(self._uuid(), device, self._rng.choice(_COUNTRIES))

    def _new_session(self) -> _Session:
        return _Session(user=self._rng.choice(self._users), session_id=self._uuid())

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        slot = self._rng.randrange(len(self._sessions))
        session = self._sessions[slot]
        event = self._step(session)
        if session.next_step is None:
            self._sessions[slot] = self._new_session()
        return event

    def take(self, count: int) -> list[Event]:
        """The next ``count`` events."""
        return [next(self) for _ in range(count)]

    def _step(self, session: _Session) -> Event:
        rng = self._rng
        event_type = session.next_step or EventType.PAGE_VIEW
        failed = rng.random() < self.config.error_rates[event_type]
        fields: dict[str, Any] = {}
        if event_type is EventType.SEARCH:
            fields["search_query"] = rng.choice(_QUERIES)
            url = f"/search?q={fields['search_query'].replace(' ', '+')}"
        elif event_type is EventType.PAGE_VIEW:
            url = rng.choice(("/", "/deals", "/new", "/category/home", "/category/sport"))
        else:
            if event_type is EventType.PRODUCT_VIEW or session.product is None:
                session.product = rng.choice(self._products)
            product = session.product
            if event_type is EventType.REMOVE_FROM_CART and session.cart:
                product = session.cart[-1]
            fields.update(product_id=product[0], price=product[1],
                          currency=_CURRENCY.get(session.user.country, "EUR"))
            if event_type in (EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART):
                fields["quantity"] = rng.randint(1, 3)
            if event_type in (EventType.CHECKOUT, EventType.PURCHASE):
                fields["quantity"] = max(1, len(session.cart))
            url = {
                EventType.CHECKOUT: "/checkout",
                EventType.PURCHASE: "/checkout/confirm",
            }.get(event_type, f"/product/{product[0]}")
        if failed:
            code, message = rng.choice(_ERROR_CODES[event_type])
            fields.update(error_code=code, error_message=message)
        event = Event(
            event_id=self._uuid(),
            user_id=session.user.user_id,
            session_id=session.session_id,
            event_type=event_type,
            status=Status.ERROR if failed else Status.SUCCESS,
            device=session.user.device,
            country=session.user.country,
            page_url=url,
            referrer=session.last_url,
            event_ts=self._clock(),
            **fields,
        )
        self._advance(session, event_type, failed)
        session.last_url = url
        return event

    def _advance(self, session: _Session, event_type: EventType, failed: bool) -> None:
        """Pick the session's next step, or end it (None)."""
        if not failed and session.product is not None:
            if event_type is EventType.ADD_TO_CART:
                session.cart.append(session.product)
            elif event_type is EventType.REMOVE_FROM_CART and session.cart:
                session.cart.pop()
        if failed and event_type in (EventType.CHECKOUT, EventType.PURCHASE):
            # A failed payment or address is retried once in a while, else abandoned.
            session.next_step = event_type if self._rng.random() < 0.4 else None
            return
        draw, cumulative = self._rng.random(), 0.0
        for next_type, probability in _FUNNEL[event_type]:
            cumulative += probability
            if draw < cumulative:
                if next_type is EventType.CHECKOUT and not session.cart:
                    next_type = EventType.PRODUCT_VIEW
                session.next_step = next_type
                return
        session.next_step = None
