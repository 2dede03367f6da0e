"""Dead letters: the record's bytes (or a prefix and a digest of them), its key, the reason and where it came from."""

from __future__ import annotations

import hashlib

from aestream.stream.deadletters import PREFIX_BYTES, dead_letter, is_dead_letter, refused, route_refused
from aestream.stream.messages import Outgoing, Record


def test_a_dead_letter_keeps_the_records_key_and_value_and_says_where_it_came_from() -> None:
    m = dead_letter("dlq", Record("readings", 3, 41, b"pump-7", b"{not json", 1767225600123), "not JSON")
    assert (m.topic, m.key, m.value) == ("dlq", b"pump-7", b"{not json")
    assert m.headers == [
        ("aestream.reason", b"not JSON"),
        ("aestream.source.topic", b"readings"),
        ("aestream.source.partition", b"3"),
        ("aestream.source.offset", b"41"),
        ("aestream.source.timestamp_ms", b"1767225600123"),
    ]


def test_a_null_value_is_told_from_an_empty_one() -> None:
    null = dead_letter("dlq", Record("readings", 0, 8, b"pump-7", None, 0), "empty message (null value)")
    empty = dead_letter("dlq", Record("readings", 0, 9, b"pump-7", b"", 0), "empty message")
    assert null.value == empty.value == b""
    assert ("aestream.value.null", b"true") in null.headers
    assert not [k for k, _ in empty.headers if k == "aestream.value.null"]


def test_a_value_over_max_bytes_keeps_its_prefix_and_the_length_and_digest_of_the_whole() -> None:
    value = b"".join(i.to_bytes(2, "big") for i in range(5_000))  # 10 000 bytes, no two prefixes alike
    m = dead_letter("dlq", Record("readings", 0, 7, None, value, 0), "too big", max_bytes=9_999)
    assert m.value == value[:PREFIX_BYTES]
    assert dict(m.headers)["aestream.value.truncated"] == b"true"
    assert dict(m.headers)["aestream.value.length"] == b"10000"
    assert dict(m.headers)["aestream.value.sha256"] == hashlib.sha256(value).hexdigest().encode()
    whole = dead_letter("dlq", Record("readings", 0, 7, None, value, 0), "too big", max_bytes=10_000)
    assert whole.value == value and "aestream.value.truncated" not in dict(whole.headers)


def test_a_message_the_broker_refused_is_dead_lettered_with_its_key_headers_size_and_topic() -> None:
    sent: list[Outgoing] = []
    msg = Outgoing("anomalies", b"e" * 9, b"pump-7", [("aestream.event.id", b"abc")])
    assert route_refused(msg, "MSG_SIZE_TOO_LARGE", sent.append, "dlq", max_bytes=4) == "dead_lettered"
    (d,) = sent
    assert (d.topic, d.key, d.value) == ("dlq", b"pump-7", b"eeee")
    assert d.headers[:3] == [
        ("aestream.event.id", b"abc"),
        ("aestream.reason", b"producing to anomalies was refused (9 bytes): MSG_SIZE_TOO_LARGE"),
        ("aestream.source.topic", b"anomalies"),
    ]
    assert dict(d.headers)["aestream.value.length"] == b"9"


def test_a_refused_changelog_record_names_the_topic_it_was_meant_for_once() -> None:
    record = Outgoing("g-changelog", b"s" * 9, b"pump-7", [("aestream.source.topic", b"readings")], 3)
    d = refused(record, "dlq", "too large", max_bytes=4)
    names = [k for k, _ in d.headers]
    assert len(names) == len(set(names)), names
    assert dict(d.headers)["aestream.source.topic"] == b"g-changelog"


def test_a_refused_dead_letter_is_dropped_never_dead_lettered_again() -> None:
    sent: list[Outgoing] = []
    again = refused(Outgoing("anomalies", b"e", b"k", [("h", b"1")]), "dlq", "too large")
    assert again.headers[0] == ("h", b"1") and is_dead_letter(again)  # its reason is not the first header
    assert route_refused(again, "MSG_SIZE_TOO_LARGE", sent.append, "dlq") == "dropped"
    to_dlq = Outgoing("dlq", b"x", b"k", [])  # no reason header, but meant for the dead-letter topic itself
    assert route_refused(to_dlq, "MSG_SIZE_TOO_LARGE", sent.append, "dlq") == "dropped"
    assert sent == []
