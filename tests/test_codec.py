from __future__ import annotations

import json
from typing import Any

import pytest

from aestream.errors import InvalidReading
from aestream.stream.codec import Block, Reading, ReadingDecoder, parse_ts_ms

CH = ("a", "b")
TS = 1_767_225_600_000


@pytest.fixture()
def decoder() -> ReadingDecoder:
    return ReadingDecoder(CH, max_message_bytes=5_000, max_readings_per_message=3)


def test_object_list_iso_and_batched_forms_decode(decoder: ReadingDecoder) -> None:
    one = decoder.decode(json.dumps({"sensor": "s", "ts": TS, "values": {"b": 2, "a": 1.5}}).encode())
    assert one == [Reading("s", TS, (1.5, 2.0))]
    iso = decoder.decode(b'{"sensor": "s", "ts": "2026-01-01T00:00:00+00:00", "values": [1, 2]}')
    assert iso[0].ts_ms == TS
    batch = decoder.decode(json.dumps([{"sensor": "s", "ts": TS + i, "values": [i, i]} for i in range(3)]).encode())
    assert [r.ts_ms for r in batch] == [TS, TS + 1, TS + 2]


BAD_MESSAGES = [
    (None, "empty message"),
    (b"\x00\x01garbage", "not JSON"),
    (b'{"sensor": "s", "ts": 1}', "missing field(s) values"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": [1, NaN]}', "not JSON: JSON is malformed: invalid character"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": [1, 1e400]}', "not JSON: Number out of range"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": [1]}', "values has 1 numbers, expected 2"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": {"a": 1, "b": 2, "c": 3}}', "unknown channel 'c'"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": {"a": 1}}', "values lacks channel 'b'"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": [1, "2"]}', "value '2' is not a number"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": [1, true]}', "value True is not a number"),
    (b'{"sensor": "", "ts": 1767225600000, "values": [1, 2]}', "sensor must be a non-empty string"),
    (b'{"sensor": "s", "ts": 1767225600, "values": [1, 2]}', "is it seconds or microseconds?"),
    (b'{"sensor": "s", "ts": "soon", "values": [1, 2]}', "ts 'soon' is not ISO-8601"),
    (b'{"sensor": "s", "ts": "2026-01-01T00:00:00Z\\u0000 junk", "values": [1, 2]}',
     "ts '2026-01-01T00:00:00Z\\x00 junk' is not ISO-8601"),
    (b'{"sensor": "s", "ts": 1' + b"0" * 400 + b', "values": [1, 2]}', "outside 2000..2200"),  # an int of any length
    (b'[]', "empty batch"),
    (b'[1, 2, 3, 4]', "batch of 4 readings exceeds stream.max_readings_per_message (3)"),
    (b'[{"sensor": "s", "ts": 1767225600000, "values": [1, 2]}, 7]',
     "batch item 1: a reading must be a JSON object"),
    (b"[" * 2000 + b"]" * 2000, "not JSON: nested deeper than the decoder allows"),
    (b'{"sensor": "s", "pad": "' + b"x" * 6000 + b'"}', "exceeds stream.max_message_bytes (5000)"),
    (b'"just a string"', "a reading must be a JSON object, got str"),
    (b'{"sensor": "s", "ts": [1767225600000, 1767225601000], "values": [[1, 2]]}',
     "columnar batch: ts has 2 times, so values must be a list of as many rows, got 1 rows"),
    (b'{"sensor": "s", "ts": [1767225600000, 1767225601], "values": [[1, 2], [3, 4]]}',
     "batch item 1: ts 1767225601 ms is outside 2000..2200"),
    (b'{"sensor": "s", "ts": [1767225600000], "values": [[1, "x"]]}',
     "batch item 0: channel 'b' value 'x' is not a number"),
    (b'{"sensor": "s", "ts": [1, 2, 3, 4], "values": [[1, 2], [1, 2], [1, 2], [1, 2]]}',
     "batch of 4 readings exceeds stream.max_readings_per_message (3)"),
    # batches that the typed decode refuses in C (the sensor's length, the times' range, each row's length)
    (json.dumps({"sensor": "x" * 257, "ts": [TS, TS + 1], "values": [[1, 2], [3, 4]]}).encode(),
     "batch item 0: sensor must be a non-empty string of at most 256 characters"),
    (json.dumps([{"sensor": "s", "ts": TS, "values": [1, 2]}, {"sensor": "s", "ts": TS + 1, "values": [1, 2, 3]}])
     .encode(), "batch item 1: values has 3 numbers, expected 2"),
    (json.dumps({"sensor": "s", "ts": [TS, TS + 1], "values": [[1, 2], 3]}).encode(),
     "batch item 1: values must be an object or a list, got float"),
    (json.dumps([{"sensor": "s", "ts": TS, "values": [1, 2]}, {"sensor": "s", "ts": 10**14, "values": [1, 2]}])
     .encode(), "batch item 1: ts 100000000000000 ms is outside 2000..2200"),
    (b'{"sensor": "s", "ts": [1767225600000, 1767225600001], "values": [[1, 2], [3, 1e999]]}',
     "not JSON: Number out of range"),
    # finite in JSON, infinite in a window's float32
    (b'{"sensor": "s", "ts": 1767225600000, "values": [1, 1e39]}', "channel 'b' value 1e+39 is beyond float32's"),
    (b'{"sensor": "s", "ts": 1767225600000, "values": {"a": -4e38, "b": 2}}', "channel 'a' value -4e+38 is beyond"),
    (b'[{"sensor": "s", "ts": 1767225600000, "values": [1, 2]}, {"sensor": "s", "ts": 1767225600001, '
     b'"values": [1e300, 2]}]', "batch item 1: channel 'a' value 1e+300 is beyond float32's range"),
    (b'{"sensor": "s", "ts": [1767225600000, 1767225600001], "values": [[1, 2], [3, 3.5e38]]}',
     "batch item 1: channel 'b' value 3.5e+38 is beyond float32's range"),
]


@pytest.mark.parametrize(("data", "reason"), BAD_MESSAGES)
def test_each_kind_of_bad_message_gets_its_reason(decoder: ReadingDecoder, data: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidReading) as err:
        decoder.decode(data)
    assert reason in str(err.value)


def test_a_value_infinite_in_float32_is_refused_on_every_decoding_path(decoder: ReadingDecoder) -> None:
    import numpy as np

    edge = float(np.nextafter(2.0**128 - 2.0**103, 0))  # the largest value float32 still rounds to a finite one
    ok = [json.dumps({"sensor": "s", "ts": TS + i, "values": [edge, -edge]}).encode() for i in range(2)]
    assert np.isfinite(np.float32(edge)) and decoder.decode(ok[0]) == [Reading("s", TS, (edge, -edge))]
    assert decoder.columns(decoder.parse_many(ok)) is not None
    big = [json.dumps({"sensor": "s", "ts": TS + i, "values": [1.0, 2.0**128]}).encode() for i in range(2)]
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(2.0**128))
    batches = [json.dumps([json.loads(m) for m in big]).encode(),
               json.dumps({"sensor": "s", "ts": [TS, TS + 1], "values": [[1, 2], [1, 2.0**128]]}).encode()]
    for m in big + batches:
        for decode in (decoder.decode, decoder.decode_blocks, lambda d: decoder.from_doc(decoder.parse_many([d])[0])):
            with pytest.raises(InvalidReading, match=r"value 3.40282e\+38 is beyond float32's range"):
                decode(m)
    assert decoder.columns(decoder.parse_many([ok[0], big[1]])) is None, "the reading goes on to its reason"
    assert decoder.blocks(batches) == [None, None]


def test_timestamps_without_offset_are_utc() -> None:
    assert parse_ts_ms("2026-01-01T00:00:00") == TS
    assert parse_ts_ms("2026-01-01T01:00:00+01:00") == TS


def test_a_batch_of_one_sensor_decodes_to_one_block_equal_to_the_readings(decoder: ReadingDecoder) -> None:
    import numpy as np

    from aestream.stream.codec import Block

    doc = json.dumps([{"sensor": "s", "ts": TS + i, "values": [i, 0.5 * i]} for i in range(3)]).encode()
    block = decoder.decode_blocks(doc)
    assert isinstance(block, Block) and block.sensor == "s"
    readings = decoder.decode(doc)
    np.testing.assert_array_equal(block.ts_ms, [r.ts_ms for r in readings])
    np.testing.assert_array_equal(block.values, [r.values for r in readings])
    mixed = json.dumps([{"sensor": "a", "ts": TS, "values": [1, 2]}, {"sensor": "b", "ts": TS, "values": [1, 2]}])
    assert [r.sensor for r in decoder.decode_blocks(mixed.encode())] == ["a", "b"]  # type: ignore[union-attr]
    bad = json.dumps([{"sensor": "s", "ts": TS, "values": [1, 2]}, {"sensor": "s", "ts": TS, "values": [1, "x"]}])
    with pytest.raises(InvalidReading, match="batch item 1: channel 'b' value 'x' is not a number"):
        decoder.decode_blocks(bad.encode())


def test_the_blocks_a_fetch_process_sends_are_those_of_batches_and_no_other(decoder: ReadingDecoder) -> None:
    import numpy as np

    array = json.dumps([{"sensor": "s", "ts": TS + i, "values": [i, 0.5 * i]} for i in range(3)]).encode()
    columnar = json.dumps({"sensor": "t", "ts": [TS, TS + 1], "values": [[1, 2], [3, 4.5]]}).encode()
    others = [
        json.dumps({"sensor": "s", "ts": TS, "values": [1, 2]}).encode(),  # a single reading: the worker's
        b"{not json",
        None,
        json.dumps([{"sensor": "a", "ts": TS, "values": [1, 2]}, {"sensor": "b", "ts": TS, "values": [1, 2]}])
        .encode(),  # two sensors: readings, not a block
        json.dumps({"sensor": "t", "ts": [TS, TS + 1], "values": [[1, 2], [3]]}).encode(),  # a short row
        json.dumps({"sensor": "t", "ts": [TS] * 4, "values": [[1, 2]] * 4}).encode(),  # over 3 readings
    ]
    got = decoder.blocks([array, *others, columnar])
    assert [type(b).__name__ for b in got] == ["Block"] + ["NoneType"] * len(others) + ["Block"]
    for message, block in ((array, got[0]), (columnar, got[-1])):
        assert block is not None and decoder.from_doc(block) is block  # the worker takes it as it is
        alone = decoder.decode_blocks(message)
        assert isinstance(alone, Block) and alone.sensor == block.sensor
        np.testing.assert_array_equal(alone.ts_ms, block.ts_ms)
        np.testing.assert_array_equal(alone.values, block.values)
    assert decoder.blocks([]) == []


def test_a_poll_s_batches_are_arrays_once_parsed_and_its_faults_keep_their_reasons(decoder: ReadingDecoder) -> None:
    batches = [json.dumps({"sensor": "t", "ts": [TS + 2 * i, TS + 2 * i + 1], "values": [[i, 2], [3, 4.5]]})
               .encode() for i in range(50)]
    short = json.dumps({"sensor": "t", "ts": [TS, TS + 1], "values": [[1, 2], [3]]}).encode()
    docs = decoder.parse_many([*batches, short, GOOD[0]])
    assert {type(d).__name__ for d in docs[:50]} == {"Block"}  # no list of rows outlives its message's parse
    with pytest.raises(InvalidReading, match="batch item 1: values has 1 numbers"):
        decoder.from_doc(docs[50])
    assert decoder.from_doc(docs[51]) == decoder.decode(GOOD[0])


GOOD = [json.dumps({"sensor": f"s{i % 3}", "ts": TS + i, "values": [i, -0.5 * i]}).encode() for i in range(6)]


def test_a_poll_of_plain_readings_decodes_column_wise_as_message_by_message(decoder: ReadingDecoder) -> None:
    cols = decoder.columns(decoder.parse_many(GOOD))
    assert cols is not None
    one_by_one = [decoder.decode(m)[0] for m in GOOD]
    assert cols.sensors == [r.sensor for r in one_by_one]
    assert cols.ts_ms.tolist() == [r.ts_ms for r in one_by_one]
    assert cols.values.tolist() == [list(r.values) for r in one_by_one]


@pytest.mark.parametrize("bad", [data for data, _ in BAD_MESSAGES] + [
    b'{"sensor": "s", "ts": 1767225600000, "values": {"a": 1, "b": 2}}',  # valid, but not the plain form
    b'{"sensor": "s", "ts": "2026-01-01T00:00:00Z", "values": [1, 2]}',
    b'[{"sensor": "s", "ts": 1767225600000, "values": [1, 2]}]',
    b'{"sensor": "s", "ts": 9223372036854775808, "values": [1, 2]}',
])
def test_one_message_off_the_plain_form_sends_the_whole_poll_message_by_message(decoder: ReadingDecoder,
                                                                                bad: bytes | None) -> None:
    assert decoder.columns(decoder.parse_many([*GOOD[:3], bad, *GOOD[3:]])) is None


def test_a_columnar_batch_decodes_to_the_block_of_the_same_readings_as_a_list(decoder: ReadingDecoder) -> None:
    import numpy as np

    from aestream.stream.codec import Block

    rows = [[1, 0.5], [2, 1.5], [3, 2.5]]
    columnar = json.dumps({"sensor": "s", "ts": [TS, TS + 1, TS + 2], "values": rows}).encode()
    listed = json.dumps([{"sensor": "s", "ts": TS + i, "values": r} for i, r in enumerate(rows)]).encode()
    a, b = decoder.decode_blocks(columnar), decoder.decode_blocks(listed)
    assert isinstance(a, Block) and isinstance(b, Block) and a.sensor == b.sensor == "s"
    np.testing.assert_array_equal(a.ts_ms, b.ts_ms)
    np.testing.assert_array_equal(a.values, b.values)
    assert decoder.decode(columnar) == decoder.decode(listed)
    iso = b'{"sensor": "s", "ts": ["2026-01-01T00:00:00Z"], "values": [{"a": 1, "b": 2}]}'  # the checking path
    assert decoder.decode_blocks(iso) == [Reading("s", TS, (1.0, 2.0))]


@pytest.mark.parametrize(("data", "reason"), BAD_MESSAGES)
def test_a_poll_gives_each_bad_message_the_reason_it_gets_alone(decoder: ReadingDecoder, data: bytes | None,
                                                               reason: str) -> None:
    docs = decoder.parse_many([GOOD[0], data, GOOD[1]])  # the poll's typed decode, then the checking path
    with pytest.raises(InvalidReading) as err:
        decoder.from_doc(docs[1])
    assert reason in str(err.value)
    assert decoder.from_doc(docs[0]) == decoder.decode(GOOD[0])


def _as_readings(got: list[Reading] | Block) -> list[Reading]:
    if isinstance(got, Block):
        return [Reading(got.sensor, int(t), tuple(map(float, v))) for t, v in zip(got.ts_ms, got.values)]
    return got


FORMS = [
    b'{"sensor": "s", "ts": 1767225600000, "values": [1, 2.5]}',
    b'{"sensor": "s", "ts": 1767225600000, "values": [1, 2.5], "site": "north"}',
    b'{"sensor": "s", "ts": 1767225600000, "values": {"b": 2.5, "a": 1}}',
    b'{"sensor": "s", "ts": "2026-01-01T00:00:00Z", "values": [1, 2.5]}',
    b'{"sensor": "s", "ts": 1767225600000.0, "values": [1, 2.5]}',
    b'{"sensor": "s", "ts": 1767225600000, "values": [3e38, -1e-308]}',
    b'{"sensor": "s", "ts": 1767225600000, "values": [123456789012345678901234567890, 0]}',
    b'[{"sensor": "s", "ts": 1767225600000, "values": [1, 2]}]',
    b'[{"sensor": "s", "ts": 1767225600000, "values": [1, 2]}, {"sensor": "s", "ts": 1767225600001, "values": [3, 4]}]',
    b'[{"sensor": "s", "ts": 1767225600000, "values": [1, 2]}, {"sensor": "t", "ts": 1767225600001, "values": [3, 4]}]',
    b'[{"sensor": "s", "ts": 1767225600000, "values": [1, 2]},'
    b' {"sensor": "s", "ts": 1767225600001, "values": {"a": 3, "b": 4}}]',
    b'{"sensor": "s", "ts": [1767225600000, 1767225600001], "values": [[1, 2], [3, 4]]}',
    b'{"sensor": "s", "ts": [1767225600000], "values": [{"a": 1, "b": 2}]}',
]


def test_every_valid_form_decodes_in_a_poll_as_it_does_alone(decoder: ReadingDecoder) -> None:
    docs = decoder.parse_many(FORMS)
    for data, doc in zip(FORMS, docs):
        assert _as_readings(decoder.from_doc(doc)) == decoder.decode(data), data
    many = [*GOOD, FORMS[1]]  # plain readings with an extra key still go column-wise
    cols = decoder.columns(decoder.parse_many(many))
    assert cols is not None and cols.values.tolist() == [list(decoder.decode(m)[0].values) for m in many]


def _at_depth(frames: int, fn: Any) -> Any:
    return fn() if frames == 0 else _at_depth(frames - 1, fn)


def test_a_value_nested_near_the_decoder_s_limit_is_refused_at_any_stack_depth(decoder: ReadingDecoder) -> None:
    # the JSON decoder's limit depends on the stack depth it runs at; what it lets through must not meet Python's
    # own recursion limit further on (a reason's text, the checking path): that crashed the loop on every restart
    for frames in range(0, 80, 4):
        for depth in range(890, 1000):
            data = b'{"sensor": "s", "ts": 1767225600000, "values": [%s, 1]}' % (b"[" * depth + b"]" * depth)
            for decode in (lambda d=data: decoder.decode(d),
                           lambda d=data: decoder.from_doc(decoder.parse_many([d])[0])):
                with pytest.raises(InvalidReading):
                    _at_depth(frames, decode)


def _reading_at(ts: int) -> bytes:
    return json.dumps({"sensor": "s", "ts": ts, "values": [1, 2]}).encode()


@pytest.mark.parametrize(("ts", "accepted"), [
    (946_684_800_000, True),  # 2000-01-01T00:00:00Z
    (946_684_799_999, False),
    (7_258_118_399_999, True),
    (7_258_118_400_000, False),  # 2200-01-01T00:00:00Z
])
def test_event_time_runs_from_2000_up_to_but_not_including_2200_on_every_path(decoder: ReadingDecoder, ts: int,
                                                                               accepted: bool) -> None:
    data = _reading_at(ts)

    def alone() -> Any:
        return decoder.decode(data)

    def in_a_poll() -> Any:
        return decoder.from_doc(decoder.parse_many([data])[0])

    if accepted:
        assert alone() == in_a_poll() == [Reading("s", ts, (1.0, 2.0))]
        cols = decoder.columns(decoder.parse_many([GOOD[0], data]))
        assert cols is not None and cols.ts_ms.tolist() == [TS, ts]
        return
    for decode in (alone, in_a_poll):
        with pytest.raises(InvalidReading, match=f"^ts {ts} ms is outside 2000..2200: is it seconds or micro"):
            decode()
    assert decoder.columns(decoder.parse_many([GOOD[0], data])) is None


def test_a_message_of_exactly_max_message_bytes_decodes_and_one_byte_more_is_oversized(
        decoder: ReadingDecoder) -> None:
    def padded(size: int) -> bytes:
        head = b'{"sensor": "s", "ts": 1767225600000, "values": [1, 2], "pad": "'
        return head + b"x" * (size - len(head) - 2) + b'"}'

    assert decoder.decode(padded(5_000)) == [Reading("s", TS, (1.0, 2.0))]
    assert decoder.from_doc(decoder.parse_many([padded(5_000)])[0]) == [Reading("s", TS, (1.0, 2.0))]
    with pytest.raises(InvalidReading) as err:
        decoder.decode(padded(5_001))
    assert str(err.value) == "message of 5001 bytes exceeds stream.max_message_bytes (5000)"
    assert err.value.kind == "oversized"
    with pytest.raises(InvalidReading) as err:
        decoder.decode(b"{not json")
    assert err.value.kind == "invalid"


def test_an_array_batch_of_one_sensor_over_max_readings_per_message_is_refused_whole(
        decoder: ReadingDecoder) -> None:
    data = json.dumps([{"sensor": "s", "ts": TS + i, "values": [i, i]} for i in range(4)]).encode()
    reason = r"^batch of 4 readings exceeds stream.max_readings_per_message \(3\)$"
    with pytest.raises(InvalidReading, match=reason):
        decoder.decode_blocks(data)
    assert decoder.blocks([data]) == [None]
    with pytest.raises(InvalidReading, match=reason):
        decoder.from_doc(decoder.parse_many([data])[0])


@pytest.fixture()
def host_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Any:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_iso_timestamps_without_offset_are_utc_whatever_the_hosts_timezone(host_in_new_york: None,
                                                                            decoder: ReadingDecoder) -> None:
    assert parse_ts_ms("2026-01-01T00:00:00") == TS
    data = b'{"sensor": "s", "ts": "2026-01-01T00:00:00", "values": [1, 2]}'
    assert decoder.decode(data) == [Reading("s", TS, (1.0, 2.0))]


def test_iso_timestamps_keep_their_milliseconds() -> None:
    assert parse_ts_ms("2026-01-01T00:00:00.250Z") == TS + 250
    assert parse_ts_ms("2026-01-01T01:00:00.999+01:00") == TS + 999


def test_a_poll_whose_value_counts_are_off_but_add_up_goes_message_by_message(decoder: ReadingDecoder) -> None:
    three = json.dumps({"sensor": "s", "ts": TS, "values": [1, 2, 3]}).encode()
    one = json.dumps({"sensor": "s", "ts": TS + 1, "values": [4]}).encode()
    docs = decoder.parse_many([three, one])  # 4 numbers: as many as two readings of 2 channels
    assert decoder.columns(docs) is None
    for doc, n in zip(docs, (3, 1)):
        with pytest.raises(InvalidReading, match=rf"^values has {n} numbers, expected 2 \(channels \['a', 'b'\]\)$"):
            decoder.from_doc(doc)


@pytest.mark.parametrize(("data", "reason"), [
    (b'{"sensor": "s", "ts": true, "values": [1, 2]}', "ts must be epoch milliseconds or ISO-8601, got True"),
    (b'{"ts": [1767225600000], "values": [[1, 2]]}', "batch item 0: missing field(s) sensor"),
])
def test_a_boolean_time_and_a_columnar_batch_without_a_sensor_get_their_reasons(
        decoder: ReadingDecoder, data: bytes, reason: str) -> None:
    with pytest.raises(InvalidReading) as err:
        decoder.decode(data)
    assert str(err.value) == reason


YEAR_MS = 365 * 86_400_000


def test_the_future_bound_looks_at_the_newest_reading_of_a_batch_wherever_it_stands() -> None:
    import numpy as np

    d = ReadingDecoder(CH, max_future_ms=1_000)
    with pytest.raises(InvalidReading, match=r"^ts 1798761600000 ms is 365 days ahead of its record's timestamp"):
        d.check_time([Reading("s", TS, (1.0, 2.0)), Reading("s", TS + YEAR_MS, (1.0, 2.0))], TS, TS)
    block = Block("s", np.array([TS, TS + YEAR_MS]), np.zeros((2, 2)))
    with pytest.raises(InvalidReading) as err:
        d.check_time(block, TS, TS)
    assert err.value.kind == "future"


def test_a_record_stamped_ahead_of_the_host_clock_does_not_widen_the_future_bound() -> None:
    import numpy as np

    d = ReadingDecoder(CH, max_future_ms=1_000)
    ahead = TS + YEAR_MS  # the producer's clock is a year fast: its record's timestamp too
    with pytest.raises(InvalidReading, match=r"^ts 1798761600000 ms is 365 days ahead of this host's clock"):
        d.check_time([Reading("s", ahead, (1.0, 2.0))], ahead, TS)
    assert d.any_ahead(np.array([TS, ahead]), np.array([TS, ahead]), TS) is True
    assert d.any_ahead(np.array([TS, TS + 1_000]), np.array([TS, TS]), TS) is False
