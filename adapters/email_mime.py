"""The MIME message of one email, and a plain-text rendering of an HTML body."""

from __future__ import annotations

import re
from collections.abc import Iterable
from email import errors as email_errors
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from html.parser import HTMLParser
from typing import Any

from server.domain.content import MessageContent

__all__ = [
    "SMTP_POLICY",
    "attachment_name",
    "attachment_type",
    "html_to_text",
    "message_id_domain",
    "message_skeleton",
    "parse_address",
    "unique_addresses",
]

# Parts are built with 7-bit transfer encodings (quoted-printable or base64 for
# anything else), so the message needs no 8BITMIME from the relay.
SMTP_POLICY = policy.SMTP.clone(cte_type="7bit")
_MIME_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")


def message_skeleton(
    content: MessageContent,
    sender: Address,
    to: Address,
    cc: list[Address],
    message_id: str,
) -> EmailMessage:
    """Headers and body; attachments are added once fetched."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    if content.reply_to:
        message["Reply-To"] = content.reply_to
    # A subject is one line; a pasted newline must not end the header block.
    message["Subject"] = " ".join(content.subject.splitlines())
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    one_click = content.list_unsubscribe
    if one_click:
        # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click to the
        # HTTPS link; the mailto: is for clients that only know RFC 2369.
        links = [f"<{one_click}>"]
        if sender.addr_spec.isascii():
            links.append(f"<mailto:{sender.addr_spec}?subject=unsubscribe>")
        message["List-Unsubscribe"] = ", ".join(links)
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    html = content.html if content.type == "html" else ""
    message.set_content(content.text or html_to_text(html))
    if html:
        message.add_alternative(html, subtype="html")
    return message


def parse_address(raw: str, what: str) -> Address:
    value = raw.strip()
    if "@" not in value or any(c in value for c in "\r\n<>,;"):
        raise ValueError(f"{what} is not a single email address")
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, email_errors.HeaderParseError) as exc:
        raise ValueError(f"{what} is not an email address") from exc
    if not address.username or not address.domain:
        raise ValueError(f"{what} is not an email address")
    return address


def message_id_domain(sender: Address, host: str) -> str:
    """The sender's domain names the message, as mail servers do; it must be ASCII."""
    domain = sender.domain
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def unique_addresses(addresses: Iterable[str], *, exclude: str) -> tuple[str, ...]:
    seen = {exclude.lower()}
    kept: list[str] = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            kept.append(address)
    return tuple(kept)


def attachment_name(raw: Any, index: int) -> str:
    # Only the last path segment, without control characters: clients save under this name.
    name = re.split(r"[/\\]", str(raw or ""))[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name or f"attachment-{index}"


def attachment_type(declared: Any, served: str) -> str:
    for candidate in (str(declared or ""), served.split(";", 1)[0]):
        candidate = candidate.strip().lower()
        if _MIME_TYPE.match(candidate):
            return candidate
    return "application/octet-stream"


# -- a plain rendering of HTML -------------------------------------------------

_BLOCKS = frozenset(
    {"p", "div", "br", "hr", "pre", "blockquote", "table", "tr", "ul", "ol", "li", "dl", "dt"}
    | {"dd", "h1", "h2", "h3", "h4", "h5", "h6", "header", "footer", "section", "article"}
    | {"aside", "nav", "main", "address", "form"}
)
_HIDDEN = frozenset({"head", "script", "style", "template", "title"})


class _PlainText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._hidden = 0
        self._links: list[tuple[str, int]] = []  # href, where the link text starts

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.out[start:]).strip()
            # A reader of the plain part still needs where the link went.
            if href.startswith(("http://", "https://", "mailto:")) and href != label:
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """A readable text/plain alternative for an HTML body that came without one."""
    parser = _PlainText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
