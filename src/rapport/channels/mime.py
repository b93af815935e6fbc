"""A small MIME writer: the final bytes of one email, CRLF line endings, ASCII only.

The stdlib ``EmailMessage`` builds a tree of header objects and a generator
walks it again to flatten it: ~1 ms per message, more than the rest of the
sender. What Rapport sends is always the same shape (a few headers, a text
part, an HTML part or both in ``multipart/alternative``), so this module
writes that shape straight to bytes with the C helpers of ``binascii``.

Headers (RFC 5322, RFC 2047):

* values that are printable ASCII are written as they are, folded at their
  spaces to 78 characters where a word allows it;
* anything else (non-ASCII, control characters, leading or trailing space,
  a literal ``=?``, a word too long to fold) becomes UTF-8 ``B`` encoded-words
  of at most 75 characters, never splitting a character;
* display names are atoms, a quoted string, or encoded-words; addresses must
  be ASCII (no SMTPUTF8);
* a value with a line break in it is refused (:class:`MimeError`): it would
  let a template or a caller write headers of its own.

Bodies are ``7bit`` when pure printable ASCII with lines of at most 78
characters and no trailing blanks, else quoted-printable, or base64 when the
text is mostly non-ASCII (quoted-printable would triple it). Line endings are
normalised to CRLF and a final one is added. Dot-stuffing is the SMTP
client's job (aiosmtplib's ``DATA`` does it for the bytes it is given).
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

MAX_LINE = 78
"""RFC 5322 2.1.1: lines SHOULD be at most 78 characters (CRLF excluded)..."""
HARD_LINE = 998
"""...and MUST be at most 998."""

_EW_PREFIX = "=?utf-8?b?"
_EW_OVERHEAD = len(_EW_PREFIX) + len("?=")
_EW_MAX_BYTES = (75 - _EW_OVERHEAD) // 4 * 3
"""UTF-8 bytes in one encoded-word of at most 75 characters (RFC 2047 2)."""
_BASE64_LINE_BYTES = 57
"""76 base64 characters a line (RFC 2045 6.8)."""

# Characters str.splitlines() breaks on: the stdlib refuses them in header
# values, and any of them could end a header line on some reader.
_LINE_BREAK = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
"""RFC 5322 ftext, short enough that ``Name: `` fits on a 78-character line."""
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
"""A display name that can be written as bare atoms (RFC 5322 3.2.3)."""
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class MimeError(ValueError):
    """The message cannot be written: a line break in a header, a bad address or name."""


def field_name(name: str) -> str:
    """``name`` if it is a valid header name, else :class:`MimeError`."""
    if _FIELD_NAME.fullmatch(name) is None:
        raise MimeError(f"not a header name: {name!r}")
    return name


def _check_value(name: str, value: str) -> None:
    if _LINE_BREAK.search(value) is not None:
        raise MimeError(f"line break in the {name} header: {value!r}")


def _fold(prefix: str, tokens: Sequence[str]) -> str:
    """``prefix`` and ``tokens`` joined by single spaces, each space a possible fold.

    A fold never leaves a line that is only blanks (RFC 5322 3.2.2). Words
    longer than a line stay whole; a line over 998 characters is refused.
    """
    lines: list[str] = []
    line = prefix + tokens[0]
    for token in tokens[1:]:
        if len(line) + 1 + len(token) > MAX_LINE and line.strip():
            lines.append(line)
            line = " " + token
        else:
            line = f"{line} {token}"
    lines.append(line)
    if max(map(len, lines)) > HARD_LINE:
        raise MimeError(f"a word of the {prefix[:-2]} header is longer than a line")
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str, first_room: int) -> list[str]:
    """``text`` as UTF-8 ``B`` encoded-words, the first fitting in ``first_room`` characters.

    Chunks end on a character boundary: RFC 2047 6.3 forbids splitting one.
    """
    data = text.encode("utf-8")
    # At least 6 bytes, so the longest UTF-8 character always fits and the loop moves.
    size = max((first_room - _EW_OVERHEAD) // 4 * 3, 6)
    words: list[str] = []
    pos, end_of_data = 0, len(data)
    while pos < end_of_data:
        end = pos + size
        if end < end_of_data:
            while data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
                end -= 1
        encoded = binascii.b2a_base64(data[pos:end], newline=False).decode("ascii")
        words.append(f"{_EW_PREFIX}{encoded}?=")
        pos, size = end, _EW_MAX_BYTES
    return words


def _plain(value: str) -> bool:
    """True when ``value`` can be written as it is in an unstructured header."""
    return (
        value.isascii()
        and value.isprintable()
        and "=?" not in value
        # The parser drops the blanks after the colon; a trailing blank may be eaten in transit.
        and value[:1] != " "
        and value[-1:] != " "
    )


def text_field(name: str, value: str) -> str:
    """An unstructured header (``Subject``, ``X-...``) with its CRLF."""
    _check_value(field_name(name), value)
    prefix = f"{name}: "
    if _plain(value):
        if len(prefix) + len(value) <= MAX_LINE:
            return f"{prefix}{value}\r\n"
        words = value.split(" ")
        if len(prefix) + len(words[0]) <= MAX_LINE and max(map(len, words)) < MAX_LINE:
            return _fold(prefix, words)
    # Blanks between adjacent encoded-words are dropped by readers (RFC 2047 6.2).
    return _fold(prefix, _encoded_words(value, MAX_LINE - len(prefix)))


def structured_field(name: str, value: str) -> str:
    """A header whose value Rapport made and is ASCII by construction
    (``Message-ID``, ``List-Unsubscribe``, ``Date``): folded at its spaces only."""
    _check_value(field_name(name), value)
    if not (value.isascii() and value.isprintable()):
        raise MimeError(f"the {name} header must be printable ASCII: {value!r}")
    line = f"{name}: {value}"
    if len(line) <= MAX_LINE:
        return line + "\r\n"
    return _fold(f"{name}: ", value.split(" "))


def _phrase(display_name: str, first_room: int) -> list[str]:
    """The tokens of a display name: atoms, one quoted string, or encoded-words."""
    if _ATOMS.fullmatch(display_name) is not None and "=?" not in display_name:
        return display_name.split(" ")
    if (
        display_name.isascii()
        and display_name.isprintable()
        and "=?" not in display_name
        and len(display_name) < MAX_LINE
    ):
        escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
        return [f'"{escaped}"']
    # Readers join adjacent encoded-words without the blank between them (RFC 2047 6.2).
    return _encoded_words(display_name, first_room)


def _address(name: str, addr_spec: str) -> str:
    if not (addr_spec.isascii() and addr_spec.isprintable()) or not addr_spec.strip():
        raise MimeError(f"the {name} address must be printable ASCII: {addr_spec!r}")
    if "<" in addr_spec or ">" in addr_spec or "@" not in addr_spec:
        raise MimeError(f"not an email address in the {name} header: {addr_spec!r}")
    return addr_spec


def address_field(name: str, mailboxes: Iterable[tuple[str, str]]) -> str:
    """An address header (``From``, ``To``, ``Reply-To``) from ``(display name, address)``."""
    prefix = f"{field_name(name)}: "
    tokens: list[str] = []
    for display_name, addr_spec in mailboxes:
        _check_value(name, display_name)
        _check_value(name, addr_spec)
        address = _address(name, addr_spec)
        if tokens:
            tokens[-1] += ","
        if not display_name:
            tokens.append(address)
            continue
        room = MAX_LINE - (len(prefix) if not tokens else 1)
        tokens.extend(_phrase(display_name, room))
        tokens.append(f"<{address}>")
    if not tokens:
        raise MimeError(f"no address in the {name} header")
    return _fold(prefix, tokens)


_last_date: tuple[tuple[float, timedelta | None], str] = ((float("nan"), None), "")
"""The last ``date_value``: a Date has whole seconds, and a thousand mails a second share it."""


def date_value(when: datetime) -> str:
    """RFC 5322 date-time, as ``email.utils.format_datetime`` writes it (~5x faster)."""
    global _last_date
    offset = when.utcoffset()
    # The instant's whole second and the offset name the text (a naive time: its fields).
    key = (when.timestamp() // 1 if offset is not None else _naive_seconds(when), offset)
    if key == _last_date[0]:
        return _last_date[1]
    text = _date_text(when, offset)
    _last_date = (key, text)
    return text


def _naive_seconds(when: datetime) -> float:
    return float(when.toordinal() * 86400 + when.hour * 3600 + when.minute * 60 + when.second)


def _date_text(when: datetime, offset: timedelta | None) -> str:
    if offset is None:
        zone = "-0000"  # RFC 5322 3.3: local time with no known offset
    else:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        hours, minutes = divmod(abs(minutes), 60)
        zone = f"{sign}{hours:02d}{minutes:02d}"
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}"
    )


def _seven_bit(lines: list[str]) -> bool:
    for line in lines:
        if len(line) > MAX_LINE or not line.isprintable() or line[-1:] == " ":
            return False
    return True


def body_part(content: str, subtype: str) -> tuple[bytes, bool]:
    """The headers and encoded body of one ``text/<subtype>`` part, and whether it is 7bit.

    A 7bit body may contain any ASCII text, so only there can a multipart
    boundary collide with the content.
    """
    if "\r" in content:
        content = content.replace("\r\n", "\n").replace("\r", "\n")
    if not content.endswith("\n"):
        content += "\n"
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: '
    if content.isascii():
        lines = content.split("\n")
        if _seven_bit(lines):
            return (head + "7bit\r\n\r\n" + "\r\n".join(lines)).encode("ascii"), True
    data = content.replace("\n", "\r\n").encode("utf-8")
    # UTF-8 bytes past one per character: a rough count of what quoted-printable
    # would triple. Past ~1 in 8, base64 (4/3) is the smaller one.
    if (len(data) - len(content)) * 8 > len(data):
        encoded = b"\r\n".join(
            binascii.b2a_base64(data[at : at + _BASE64_LINE_BYTES], newline=False)
            for at in range(0, len(data), _BASE64_LINE_BYTES)
        )
        return (head + "base64\r\n\r\n").encode("ascii") + encoded + b"\r\n", False
    # The input's line breaks are all CRLF, so b2a_qp writes CRLF (hard and soft) too.
    encoded = binascii.b2a_qp(data, istext=True)
    return (head + "quoted-printable\r\n\r\n").encode("ascii") + encoded, False


def random_boundaries() -> Iterator[str]:
    """Boundaries of 128 random bits. ``=_`` never occurs in quoted-printable or base64."""
    while True:
        yield "=_" + secrets.token_hex(16)


def choose_boundary(seven_bit_parts: Sequence[bytes], candidates: Iterator[str]) -> str:
    """The first candidate that no 7bit part contains (RFC 2046 5.1.1)."""
    for boundary in candidates:
        marker = boundary.encode("ascii")
        if not any(marker in part for part in seven_bit_parts):
            return boundary
    raise MimeError("no multipart boundary left to try")


def render(
    header_fields: Sequence[str],
    *,
    text: str | None,
    html: str | None,
    boundaries: Iterator[str] | None = None,
) -> bytes:
    """The whole message: ``header_fields`` (each a CRLF-ended field from this
    module), ``MIME-Version``, and the text part, the HTML part, or both as
    ``multipart/alternative`` (text first: readers show the last one they can)."""
    parts = [
        body_part(content, subtype)
        for content, subtype in ((text, "plain"), (html, "html"))
        if content
    ]
    if not parts:
        raise MimeError("the email has neither a text nor an HTML part")
    head = "".join(header_fields) + "MIME-Version: 1.0\r\n"
    if len(parts) == 1:
        return head.encode("ascii") + parts[0][0]
    boundary = choose_boundary(
        [part for part, seven_bit in parts if seven_bit],
        random_boundaries() if boundaries is None else boundaries,
    )
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    return b"".join(
        (
            f'{head}Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n".encode("ascii"),
            delimiter.join(part for part, _ in parts),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )
