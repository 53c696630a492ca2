"""The consent ledger's rules: keywords, scopes, and which sends an entry stops."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from server.domain.addresses import AddressError, normalize_email, normalize_msisdn
from server.domain.errors import FieldViolation, invalid

SCOPE_ALL = "all"
OPTED_OUT_REFUSAL = "OPTED_OUT"
# Marks the hub's own confirmation of a keyword in a message's content: an
# opt-out that follows must not withdraw the reply confirming the one before.
CONSENT_REPLY = "consentReply"
# A provider's answer that the recipient unsubscribed with it (e.g. Twilio 21610).
PROVIDER_OPT_OUT_REASON = "recipient unsubscribed at the provider"

# Channels where a customer's whole message can be a keyword.
KEYWORD_CHANNELS = frozenset({"SMS", "RCS", "WHATSAPP"})
_PHONE_TYPES = frozenset({"SMS", "RCS", "WHATSAPP"})


class ConsentState(StrEnum):
    OPTED_OUT = "OPTED_OUT"
    OPTED_IN = "OPTED_IN"


class ConsentSource(StrEnum):
    INBOUND_KEYWORD = "INBOUND_KEYWORD"
    EMAIL_ONE_CLICK = "EMAIL_ONE_CLICK"
    API = "API"
    PROVIDER_ERROR = "PROVIDER_ERROR"


class KeywordAction(StrEnum):
    OPT_OUT = "OPT_OUT"
    OPT_IN = "OPT_IN"
    HELP = "HELP"


DEFAULT_OPT_OUT = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "END",
    "QUIT",
    "CANCEL",
    "REVOKE",
    "OPTOUT",
    "OPT-OUT",
    "REMOVE",
    # French, Spanish, Portuguese, Italian, German, Dutch, Scandinavian.
    "ARRET",
    "ARRÊT",
    "DESABONNER",
    "DÉSABONNER",
    "BAJA",
    "ALTO",
    "PARAR",
    "CANCELAR",
    "SAIR",
    "BASTA",
    "STOPP",
    "ABMELDEN",
    "AFMELDEN",
)
DEFAULT_OPT_IN = ("START", "UNSTOP", "YES")
DEFAULT_HELP = ("HELP", "INFO", "AIDE", "AYUDA", "HILFE")
DEFAULT_OPT_OUT_REPLY = (
    "You are unsubscribed and will receive no more messages from this number. "
    "Reply START to resubscribe."
)
DEFAULT_OPT_IN_REPLY = "You are subscribed again. Reply STOP to unsubscribe."


@dataclass(frozen=True, slots=True)
class ConsentSettings:
    """A tenant's keywords and replies; empty lists and texts mean the built-in ones."""

    opt_out_keywords: tuple[str, ...] = ()
    opt_in_keywords: tuple[str, ...] = ()
    help_keywords: tuple[str, ...] = ()
    opt_out_reply: str = ""
    opt_in_reply: str = ""
    replies_disabled: bool = False

    def in_force(self) -> ConsentSettings:
        return ConsentSettings(
            self.opt_out_keywords or DEFAULT_OPT_OUT,
            self.opt_in_keywords or DEFAULT_OPT_IN,
            self.help_keywords or DEFAULT_HELP,
            self.opt_out_reply or DEFAULT_OPT_OUT_REPLY,
            self.opt_in_reply or DEFAULT_OPT_IN_REPLY,
            self.replies_disabled,
        )


@dataclass(frozen=True, slots=True)
class Keyword:
    action: KeywordAction
    word: str  # as the customer wrote it, trimmed


@dataclass(frozen=True, slots=True)
class InboundKeyword:
    """A customer message that is a keyword, as the inbound path records it."""

    channel_type: str
    keyword: Keyword
    # The tenant's channels of that type: an opt-out withdraws what waits on them.
    channel_ids: tuple[str, ...] = ()

    def change(self, address: str, inbound_message_id: str) -> ConsentChange | None:
        if self.keyword.action is KeywordAction.HELP:
            return None
        state = (
            ConsentState.OPTED_OUT
            if self.keyword.action is KeywordAction.OPT_OUT
            else ConsentState.OPTED_IN
        )
        return ConsentChange(
            self.channel_type,
            address,
            SCOPE_ALL,
            state,
            ConsentSource.INBOUND_KEYWORD,
            reason=self.keyword.word,
            inbound_message_id=inbound_message_id,
        )


@dataclass(frozen=True, slots=True)
class KeywordOutcome:
    """What a keyword message did to the ledger, for the confirmation reply."""

    channel_id: str
    address: str
    action: KeywordAction
    changed: bool


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """One statement of consent, as it enters the audit history."""

    channel_type: str
    address: str
    scope: str
    state: ConsentState
    source: ConsentSource
    reason: str = ""
    inbound_message_id: str = ""
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class ConsentEntry:
    id: str
    channel_type: str
    address: str
    scope: str
    state: ConsentState
    source: ConsentSource
    reason: str
    inbound_message_id: str
    message_id: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class ConsentStep:
    scope: str
    state: ConsentState
    source: ConsentSource
    reason: str
    inbound_message_id: str
    message_id: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class Applied:
    """What recording a change did: whether the state moved, and the entry after."""

    entry: ConsentEntry
    changed: bool
    # Messages still waiting to go that the opt-out withdrew (stored FAILED, OPTED_OUT).
    withdrawn: tuple[str, ...] = ()


def fold(text: str) -> str:
    """Compare form: accents dropped, case folded, everything but letters and
    digits removed, so " Arrêt! ", "ARRET" and "arret." are one word, and
    OPT-OUT is OPTOUT."""
    # NFKD splits "Ê" into "E" and a combining accent, which is not alphanumeric
    # and so goes with the punctuation; it also maps full-width letters to ASCII.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed.casefold() if ch.isalnum()).upper()


def classify(text: str, settings: ConsentSettings) -> Keyword | None:
    """The keyword the whole text is, or None; a keyword inside a sentence is none."""
    folded = fold(text)
    if not folded or len(text) > 64:
        return None
    s = settings.in_force()
    for action, words in (
        (KeywordAction.OPT_OUT, s.opt_out_keywords),
        (KeywordAction.OPT_IN, s.opt_in_keywords),
        (KeywordAction.HELP, s.help_keywords),
    ):
        if folded in {fold(w) for w in words}:
            return Keyword(action, text.strip())
    return None


def normalise_address(channel_type: str, raw: str, field: str = "address") -> str:
    kind = channel_type.upper()
    try:
        if kind in _PHONE_TYPES:
            return normalize_msisdn(raw)
        if kind == "EMAIL":
            return normalize_email(raw)
    except AddressError as exc:
        raise invalid([FieldViolation(field, str(exc))]) from None
    return raw.strip()


def normalise_scope(scope: str) -> str:
    return scope.strip().lower() or SCOPE_ALL


def blocks(states: Mapping[str, ConsentState], category: str) -> bool:
    """Whether an address's entries (scope -> state) stop a send of `category`.

    Nothing gets past an opt-out of all; a categorised send is stopped by an
    opt-out of its own category only, so a transactional message still reaches
    someone who opted out of marketing. A send that names no category could be
    anything, so any opt-out stops it.
    """
    if states.get(SCOPE_ALL) is ConsentState.OPTED_OUT:
        return True
    wanted = normalise_scope(category) if category else ""
    if wanted:
        return states.get(wanted) is ConsentState.OPTED_OUT
    return any(state is ConsentState.OPTED_OUT for state in states.values())


def check_keywords(words: Iterable[str], field: str) -> list[FieldViolation]:
    return [FieldViolation(field, f"{w!r} has no letters or digits") for w in words if not fold(w)]
