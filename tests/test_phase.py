from __future__ import annotations

import base64
import json
import logging
import zlib

import numpy as np
import pytest

from aestream.stream.phase import (
    METADATA_MAX_BYTES,
    PhaseCheckpoint,
    decode_checkpoint,
    decode_phases,
    encode_checkpoint,
    encode_phases,
)
from aestream.stream.windows import Windower


def _held(n: int) -> tuple[Windower, dict[str, tuple[str, int]]]:
    """A windower (window 2, stride 2) holding one reading of each of ``n`` sensors of in[0], and their partition."""
    windows = Windower(window_size=2, stride=2, n_channels=1, max_gap_ms=10)
    sensors = {f"s{i:03d}": ("in", 0) for i in range(n)}
    for s in sensors:
        windows.push(s, 1, (0.0,))
    return windows, sensors


@pytest.mark.parametrize("n", [0, 1, 40, 1000])
def test_phases_round_trip_within_the_brokers_limit(n: int) -> None:
    rng = np.random.default_rng(n)
    phases = {f"plant-{rng.integers(0, 9)}/pump-{i:05d}": int(rng.integers(0, 4)) for i in range(n)}
    phases["ünïcode ✓ \"quoted\""] = 2
    text = encode_phases(4, phases)
    assert text is not None and len(text.encode()) <= METADATA_MAX_BYTES
    assert text.startswith("z") == (n >= 40)  # deflated once that is shorter
    assert decode_phases(text) == (4, phases)


def test_phases_that_do_not_fit_give_none_and_the_limit_is_a_parameter() -> None:
    many = {f"sensor-{i}": i % 4 for i in range(3000)}
    assert encode_phases(4, many) is None
    assert encode_phases(4, many, max_bytes=100_000) is not None
    few = {"a": 0, "b": 1}
    assert encode_phases(2, few, max_bytes=10) is None
    assert encode_phases(2, few, max_bytes=len(encode_phases(2, few) or "")) is not None


@pytest.mark.parametrize("text", [
    "",
    "some other tool's note",
    "{not json",
    "z!!not base64",
    "z" + base64.b64encode(b"not deflate").decode(),
    '{"v":2,"stride":4,"phases":[]}',
    '{"v":1,"stride":2,"phases":[[],[],["three groups for stride 2"]]}',
    '{"v":1,"stride":0,"phases":[]}',
    '{"v":1,"stride":4,"phases":[[1]]}',
    '[1, 2]',
])
def test_metadata_that_holds_no_phases_of_ours_decodes_to_none(text: str) -> None:
    assert decode_phases(text) is None


def test_the_deflated_form_is_the_json_form_deflated() -> None:
    phases = {f"s{i}": i % 3 for i in range(200)}
    text = encode_phases(3, phases)
    assert text is not None and text.startswith("z")
    doc = json.loads(zlib.decompress(base64.b64decode(text[1:])))
    assert doc["v"] == 1 and doc["stride"] == 3 and sorted(doc["phases"][1]) == doc["phases"][1]


def test_a_checkpoint_leaves_out_partitions_that_do_not_fit_until_they_have_fewer_sensors(
        caplog: pytest.LogCaptureFixture) -> None:
    windows = Windower(window_size=2, stride=2, n_channels=1, max_gap_ms=10)
    sensors = {f"s{i:03d}": ("in", i % 2) for i in range(60)}
    for s in sensors:
        windows.push(s, 1, (0.0,))
    checkpoint = PhaseCheckpoint(windows, max_bytes=200)
    with caplog.at_level(logging.WARNING, logger="aestream.stream.phase"):
        assert checkpoint.metadata(sensors, [("in", 0), ("in", 1), ("in", 2)]) == {}
        assert checkpoint.metadata(sensors, [("in", 0)]) == {}  # not encoded again: as many sensors as before
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "the window phase of the 30 sensors of in", "the window phase of the 30 sensors of in"]
    few = {s: p for s, p in sensors.items() if s < "s010"}
    assert checkpoint.metadata(few, [("in", 0)]) == {("in", 0): encode_phases(2, {s: 1 for s in list(few)[::2]})}


def test_phases_that_do_not_deflate_shorter_keep_the_json_form() -> None:
    rng = np.random.default_rng(5)
    phases = {base64.b85encode(rng.bytes(24)).decode(): i % 2 for i in range(9)}  # 30 random characters each
    text = encode_phases(2, phases)
    assert text is not None and len(text) == 330  # over 256 bytes, but its deflated form would be longer
    assert text.startswith('{"v":1,"stride":2,"phases":[[') and decode_phases(text) == (2, phases)


def test_the_metadata_limit_counts_utf8_bytes_not_characters() -> None:
    phases = {f"{'ü' * 10}{i}": 0 for i in range(3)}
    text = encode_phases(1, phases)
    assert text is not None and (len(text), len(text.encode())) == (73, 103)
    assert encode_phases(1, phases, max_bytes=102) is None
    assert encode_phases(1, phases, max_bytes=103) == text


def test_a_partition_that_still_does_not_fit_with_fewer_sensors_is_warned_about_once(
        caplog: pytest.LogCaptureFixture) -> None:
    windows, sensors = _held(60)
    checkpoint = PhaseCheckpoint(windows, max_bytes=180)
    with caplog.at_level(logging.WARNING, logger="aestream.stream.phase"):
        assert checkpoint.metadata(sensors, [("in", 0)]) == {}
        fewer = {s: p for s, p in sensors.items() if s < "s050"}  # encoded again, and still too many
        assert checkpoint.metadata(fewer, [("in", 0)]) == {}
    assert [r.getMessage()[:44] for r in caplog.records] == ["the window phase of the 60 sensors of in[0] "]


def test_phases_committed_under_another_stride_are_not_restored(caplog: pytest.LogCaptureFixture) -> None:
    windows = Windower(window_size=2, stride=2, n_channels=1, max_gap_ms=10)
    windows.push("s", 1, (0.0,))
    checkpoint = PhaseCheckpoint(windows)
    checkpoint.expect({("in", 0): encode_phases(3, {"s": 2}) or ""})
    with caplog.at_level(logging.WARNING, logger="aestream.stream.phase"):
        checkpoint.restore({("in", 0)}, {"s": ("in", 0)})
    assert windows.phases(["s"]) == {"s": 1} and checkpoint.pending == {}
    assert [r.getMessage() for r in caplog.records] == [
        """the metadata committed on in[0] ('{"v":1,"stride":3,"phases":[[],[],["s"]) holds no window phases """
        "for stream.stride = 2: its sensors close a window at their first live reading"]


def test_without_committed_phases_each_sensor_of_the_partition_closes_a_window_at_its_next_reading() -> None:
    windows = Windower(window_size=4, stride=4, n_channels=1, max_gap_ms=10)
    for t in range(1, 7):  # a window closed at the 4th reading; two more since
        windows.push("s", t, (0.0,))
        windows.push("other", t, (0.0,))
    checkpoint = PhaseCheckpoint(windows)
    checkpoint.expect({("in", 0): ""})
    checkpoint.restore({("in", 0)}, {"s": ("in", 0), "other": ("in", 1)})
    closed = windows.push("s", 7, (0.0,))
    assert closed is not None and closed.start_ms == 4, "the window reaches back over the readings since the last"
    assert windows.push("other", 7, (0.0,)) is None, "a sensor of another partition keeps its count"


@pytest.mark.parametrize("tail", ["\x00", "\x7f", "\x00garbage", "AAAA"])
def test_phases_read_back_with_bytes_after_them_still_decode(tail: str) -> None:
    """librdkafka keeps commit metadata as a C string: confluent-kafka's commits read back with a NUL through
    kafka-python, and kafka-python's may read back through confluent-kafka with bytes past their end."""
    many = {f"plant-3/pump-{i:05d}": i % 4 for i in range(200)}
    for text in (encode_phases(4, {"a": 1, "b": 3}), encode_phases(4, many)):
        assert text is not None
        assert decode_phases(text + tail) == decode_phases(text) != None  # noqa: E711
    assert encode_phases(4, many).startswith("z")  # type: ignore[union-attr]


def test_commit_metadata_that_confluent_kafka_cannot_decode_counts_as_none(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("confluent_kafka")
    from aestream.kafka.confluent import _metadata

    class Read:  # a TopicPartition as librdkafka hands it out
        topic, partition = "in", 3

        def __init__(self, metadata: object) -> None:
            self._metadata = metadata

        @property
        def metadata(self) -> object:
            if isinstance(self._metadata, BaseException):
                raise self._metadata
            return self._metadata

    bad = UnicodeDecodeError("utf-8", b"\xc1", 0, 1, "invalid start byte")
    with caplog.at_level(logging.WARNING, logger="aestream.kafka.confluent"):
        assert [_metadata(Read(m)) for m in (None, "\x00", "meta\x7f", bad)] == ["", "", "meta\x7f", ""]  # type: ignore[arg-type]
    assert "in[3] is not UTF-8" in caplog.text


def test_alarm_states_round_trip_beside_the_phases_and_bad_ones_decode_to_none() -> None:
    alarms = {f"pump-{i}": (i + 1, (0.1 * i, 1e300)) for i in range(50)}
    alarms["quiet"] = (3, ())
    text = encode_checkpoint(4, {"pump-1": 2}, alarms)
    assert text is not None and text.startswith("z")
    assert decode_checkpoint(text) == (4, {"pump-1": 2}, alarms)
    assert decode_phases(text) == (4, {"pump-1": 2})
    assert decode_checkpoint(encode_checkpoint(1, None, {}) or "") == (1, None, {})  # none in alarm: all cleared
    for bad in ('{"v":1,"stride":1}', '{"v":1,"stride":1,"alarms":{"a":-1}}', '{"v":1,"stride":1,"alarms":{"a":"1"}}',
                '{"v":1,"stride":1,"alarms":{"a":[1,["x"]]}}', '{"v":1,"stride":1,"alarms":[]}'):
        assert decode_checkpoint(bad) is None, bad


def test_alarm_states_that_do_not_fit_leave_the_phases_and_are_not_encoded_again_at_as_many(
        caplog: pytest.LogCaptureFixture) -> None:
    windows, sensors = _held(3)
    checkpoint = PhaseCheckpoint(windows, max_bytes=120)
    crowd = {f"alarming-{i:03d}": (1, ()) for i in range(20)}
    with caplog.at_level(logging.WARNING, logger="aestream.stream.phase"):
        out = checkpoint.metadata({**sensors, **dict.fromkeys(crowd, ("in", 0))}, [("in", 0)], crowd)
        assert out == {("in", 0): encode_phases(2, {s: 1 for s in sensors})}  # the phases alone
        checkpoint.metadata({**sensors, **dict.fromkeys(crowd, ("in", 0))}, [("in", 0)], crowd)
    assert len(caplog.records) == 1 and "alarm state of the 20 sensors of in[0]" in caplog.text
    few = {"alarming-000": (1, ())}
    out = checkpoint.metadata({**sensors, "alarming-000": ("in", 0)}, [("in", 0)], few)
    assert decode_checkpoint(out[("in", 0)]) == (2, {s: 1 for s in sensors}, few)


def test_a_restore_hands_back_the_alarm_states_and_without_a_count_stride_leaves_the_phases() -> None:
    windows = Windower(window_size=4, stride=1, n_channels=1, max_gap_ms=10)
    checkpoint = PhaseCheckpoint(windows, count_stride=False)
    checkpoint.expect({("in", 0): encode_checkpoint(1, None, {"s": (5, ())}) or "", ("in", 1): "",
                       ("in", 2): encode_phases(1, {"t": 0}) or ""})
    assert checkpoint.restore({("in", 0), ("in", 1), ("in", 2)}, {"s": ("in", 0)}) == {("in", 0): {"s": (5, ())}}
    assert checkpoint.pending == {}
