"""The MIME writer against the stdlib parser: what goes in comes back out, on the wire rules."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email import errors
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import format_datetime, parseaddr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapport.channels import mime

# What str.splitlines() breaks on: refused in header values (see test_line_breaks_are_refused).
LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
header_text = st.text(st.characters(exclude_characters=LINE_BREAKS, exclude_categories=["Cs"]))
addresses = st.emails().filter(lambda a: len(a) < 200)
lines = st.one_of(
    st.text(max_size=40),
    st.sampled_from([".", "..", ".hidden", "From here", "trailing  ", "\ttab", "", "=3D", "--x"]),
    st.builds(lambda c, n: c * n, st.sampled_from("aé. =\t"), st.integers(70, 1500)),
)
bodies = st.builds(
    lambda parts, seps, end: "".join(p + s for p, s in zip(parts, seps, strict=False)) + end,
    st.lists(lines, min_size=1, max_size=12),
    st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=12, max_size=12),
    st.sampled_from(["", "\n", "\r\n", "x"]),
)
field_names = st.from_regex(r"X-[A-Za-z0-9-]{1,30}", fullmatch=True)


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def normalised(body: str) -> str:
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def content(part: Message | None) -> str:
    assert isinstance(part, EmailMessage)
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def display_name(raw: bytes, name: str) -> tuple[str, str]:
    """The display name and address of header ``name``, decoded as RFC 2047 says.

    The stdlib's policy.default keeps the blank between two adjacent
    encoded-words of a display name (RFC 2047 6.2 says drop it; its own
    generator writes such names and reads them back wrong), so long names are
    read with the legacy decoder, which follows the RFC.
    """
    field = email.message_from_bytes(raw)[name]  # compat32: the unfolded source text
    assert isinstance(field, str)
    phrase, address = parseaddr(field.replace("\r\n", ""))
    return str(make_header(decode_header(phrase))), address


def defects(message: EmailMessage) -> list[object]:
    """What the parser found wrong, in the message, its parts and every header.

    Control characters asked for in a display name come back as asked, with a
    NonPrintableDefect that is about the text, not about how it was written.
    """
    found: list[object] = []
    for part in message.walk():
        found.extend(part.defects)
        for _, value in part.items():
            found.extend(getattr(value, "defects", ()))
    return [d for d in found if not isinstance(d, errors.NonPrintableDefect)]


def blanks(name: str) -> str:
    """``name`` with runs of blanks as one space: how policy.default reads a phrase."""
    return re.sub("[ \t]+", " ", name)


def check_wire_format(raw: bytes) -> None:
    assert raw.isascii()
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= mime.HARD_LINE


@settings(max_examples=300, deadline=None)
@given(
    subject=header_text,
    from_name=header_text,
    from_address=addresses,
    to_name=header_text,
    to_address=addresses,
    extra=st.dictionaries(field_names, header_text, max_size=4),
    text=st.one_of(st.none(), bodies),
    html=st.one_of(st.none(), bodies),
)
def test_what_is_written_parses_back(
    subject: str,
    from_name: str,
    from_address: str,
    to_name: str,
    to_address: str,
    extra: dict[str, str],
    text: str | None,
    html: str | None,
) -> None:
    if not text and not html:
        text = "fallback"
    # One value per field name: names differing only in case are the same field.
    by_name = {name.lower(): (name, value) for name, value in extra.items()}
    extra = dict(by_name.values())
    fields = [
        mime.address_field("From", [(from_name, from_address)]),
        mime.address_field("To", [(to_name, to_address)]),
        mime.text_field("Subject", subject),
        *(mime.text_field(name, value) for name, value in extra.items()),
    ]
    raw = mime.render(fields, text=text, html=html)

    check_wire_format(raw)
    parsed = parse(raw)
    assert defects(parsed) == []
    assert parsed["Subject"] == subject
    assert parsed["MIME-Version"] == "1.0"
    for name, value in extra.items():
        assert parsed[name] == value
    for field, name, address in (("From", from_name, from_address), ("To", to_name, to_address)):
        [mailbox] = parsed[field].addresses
        assert mailbox.addr_spec == address
        assert display_name(raw, field) == (name, address)
        if len(name) <= 10:  # one encoded-word at most: the stdlib reads it right too
            assert blanks(mailbox.display_name) == blanks(name)
    if text and html:
        assert parsed.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    else:
        assert parsed.get_content_type() == ("text/plain" if text else "text/html")
    if text:
        assert content(parsed.get_body(("plain",))) == normalised(text)
    if html:
        assert content(parsed.get_body(("html",))) == normalised(html)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(header_text, addresses), min_size=1, max_size=4))
def test_address_lists(mailboxes: list[tuple[str, str]]) -> None:
    raw = mime.render([mime.address_field("Reply-To", mailboxes)], text="x", html=None)
    check_wire_format(raw)
    parsed = parse(raw)
    assert [a.addr_spec for a in parsed["Reply-To"].addresses] == [a for _, a in mailboxes]
    short = [(blanks(n), a) for n, a in mailboxes if len(n) <= 10]
    got = {(blanks(a.display_name), a.addr_spec) for a in parsed["Reply-To"].addresses}
    assert set(short) <= got


def test_encoding_is_chosen_by_content() -> None:
    def cte(body: str) -> str:
        parsed = parse(mime.render([], text=body, html=None))
        return str(parsed["Content-Transfer-Encoding"])

    assert cte("Hello Dana,\nnew shoes.\n") == "7bit"
    assert cte("a" * 79) == "quoted-printable"  # a line over 78
    assert cte("trailing blank \n") == "quoted-printable"  # could be stripped in transit
    assert cte("tab\there") == "quoted-printable"
    assert cte("Grüße aus Köln, see you soon") == "quoted-printable"
    assert cte("Привет, как дела? Новые туфли") == "base64"
    assert cte("日本語のメール") == "base64"


def test_quoted_printable_and_base64_lines_stay_short() -> None:
    for body in ("é" + "a" * 5000, "Привет " * 800, "x=" * 3000):
        raw = mime.render([], text=body, html=None)
        _, _, encoded = raw.partition(b"\r\n\r\n")
        assert max(len(line) for line in encoded.split(b"\r\n")) <= 76
        assert content(parse(raw)) == normalised(body)


def test_long_headers_fold_to_78_characters() -> None:
    subject = "Your order of the autumn collection has shipped and will arrive soon " * 3
    fields = [
        mime.text_field("Subject", subject.strip()),
        mime.text_field("X-Note", "Grüße " * 40),
        mime.address_field(
            "To", [("Dana Verylongfamilyname-Withadoublebarrel", "dana@example.com")]
        ),
    ]
    raw = mime.render(fields, text="x", html=None)
    head = raw.partition(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= mime.MAX_LINE
    parsed = parse(raw)
    assert parsed["Subject"] == subject.strip()
    assert parsed["X-Note"] == "Grüße " * 40
    assert head.startswith(b"Subject: Your order of the autumn collection")  # plain stays plain


def test_plain_values_stay_readable_and_odd_ones_are_encoded() -> None:
    assert mime.text_field("Subject", "Shoes for you") == "Subject: Shoes for you\r\n"
    assert mime.address_field("From", [("Shop", "news@shop.example.com")]) == (
        "From: Shop <news@shop.example.com>\r\n"
    )
    assert mime.address_field("To", [("", "dana@example.com")]) == "To: dana@example.com\r\n"
    assert mime.address_field("To", [("Dana, S.", "d@example.com")]) == (
        'To: "Dana, S." <d@example.com>\r\n'
    )
    # A literal encoded-word, leading or trailing blanks: written so they read back the same.
    for value in ("=?utf-8?q?x?=", " lead", "trail ", "tab\tin"):
        assert "=?utf-8?b?" in mime.text_field("Subject", value)
        assert (
            parse(mime.render([mime.text_field("Subject", value)], text="x", html=None))["Subject"]
            == value
        )


@pytest.mark.parametrize("value", ["a\r\nBcc: victim@example.com", "a\nb", "a\rb", "a\u2028b"])
def test_line_breaks_are_refused(value: str) -> None:
    with pytest.raises(mime.MimeError, match="line break"):
        mime.text_field("X-Bad", value)
    with pytest.raises(mime.MimeError, match="line break"):
        mime.address_field("To", [(value, "dana@example.com")])
    with pytest.raises(mime.MimeError):
        mime.structured_field("List-Unsubscribe", f"<https://x.example/{value}>")


def test_bad_names_and_addresses_are_refused() -> None:
    for name in ("", "X Bad", "X:Bad", "X-É", "X-" + "a" * 80):
        with pytest.raises(mime.MimeError, match="header name"):
            mime.text_field(name, "v")
    for address in ("dänä@example.com", "no-at-sign", "a<b@example.com", ""):
        with pytest.raises(mime.MimeError):
            mime.address_field("To", [("Dana", address)])
    with pytest.raises(mime.MimeError, match="longer than a line"):
        mime.structured_field("List-Unsubscribe", "<https://x.example/" + "a" * 1000 + ">")
    with pytest.raises(mime.MimeError, match="neither"):
        mime.render([], text="", html=None)


def test_the_boundary_avoids_the_7bit_bodies() -> None:
    text = "--=_first appears in the text\n"
    raw = mime.render([], text=text, html="<p>hi</p>", boundaries=iter(["=_first", "=_second"]))
    assert b'boundary="=_second"' in raw
    parsed = parse(raw)
    assert content(parsed.get_body(("plain",))) == text
    assert content(parsed.get_body(("html",))) == "<p>hi</p>\n"
    assert mime.choose_boundary([b"=_a", b"=_b"], iter(["=_a", "=_b", "=_c"])) == "=_c"


def test_random_boundaries_differ() -> None:
    boundaries = mime.random_boundaries()
    first, second = next(boundaries), next(boundaries)
    assert first != second and first.startswith("=_") and len(first) == 34


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9999, 1, 1)),
    st.one_of(
        st.none(),
        st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    ),
)
def test_date_matches_the_stdlib(when: datetime, zone: timezone | None) -> None:
    when = when.replace(tzinfo=zone)
    assert mime.date_value(when) == format_datetime(when)


@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9998, 12, 31)),
    st.integers(-2_000_000, 2_000_000),
    st.sampled_from(
        [
            None,
            UTC,
            timezone(timedelta(hours=2)),
            timezone(-timedelta(hours=5, minutes=30)),
        ]
    ),
    st.sampled_from([None, UTC, timezone(timedelta(hours=2))]),
)
def test_the_date_of_the_last_second_is_reused_only_for_that_second(
    when: datetime, micros: int, zone: timezone | None, other_zone: timezone | None
) -> None:
    # Mails of one second share their Date; the next instant, or another offset, gets its own.
    first = when.replace(tzinfo=zone)
    for then in (first, first + timedelta(microseconds=micros), when.replace(tzinfo=other_zone)):
        assert mime.date_value(then) == format_datetime(then)
        assert mime.date_value(then) == format_datetime(then)
