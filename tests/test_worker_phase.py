"""With a count stride the worker commits each partition's window phases as offset metadata, and restores the
metadata a rebuilt partition was committed with after its replay, before its first live record."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from aestream.config import Config
from aestream.detect.thresholds import causal_smooth
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Record
from aestream.stream.phase import decode_checkpoint, decode_phases, encode_checkpoint, encode_phases
from aestream.training.fit import sliding_windows
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
T0 = 1_767_225_600_000


def _rec(partition: int, offset: int, sensor: str, i: int, replay: bool = False) -> Record:
    return Record("in", partition, offset, sensor.encode(), encode_reading(sensor, T0 + 1000 * i, [1.0, 2, 3, 4]),
                  0, replay)


def _worker(stream: dict, edge: Any, bundle: Any, one_model: Any, recording_sink: Any) -> Worker:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, **stream})
    worker = Worker(cfg, edge, recording_sink(), one_model(bundle), clock=lambda: 0.0)
    worker.refresh_model(force=True)
    return worker


@pytest.fixture()
def bundle(train_small: Any) -> Any:
    return train_small(Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4}))


def test_a_count_stride_commits_each_partitions_phases_as_of_the_committed_offset(scripted_source: Any,
        bundle: Any, one_model: Any, recording_sink: Any) -> None:
    polls = [[_rec(0, i, "a", i) for i in range(7)] + [_rec(1, i, s, i) for i, s in enumerate("bcbcb")]]
    edge = scripted_source(polls)
    worker = _worker({"stride": 3}, edge, bundle, one_model, recording_sink)
    worker.step()
    worker.commit()
    (offsets, metadata), = edge.commits
    assert offsets == {("in", 0): 7, ("in", 1): 5} and metadata is not None
    assert {p: decode_phases(m) for p, m in metadata.items()} == {
        ("in", 0): (3, {"a": 7 % 3}), ("in", 1): (3, {"b": 3 % 3, "c": 2 % 3})}


@pytest.mark.parametrize("stream", [{"stride": 1}, {"stride": 1, "stride_ms": 2000}])
def test_without_a_count_stride_commits_carry_the_alarm_states_alone(scripted_source: Any, stream: dict,
        bundle: Any, one_model: Any, recording_sink: Any) -> None:
    edge = scripted_source([[_rec(0, i, "a", i) for i in range(7)]],
                           handoff={("in", 0): encode_phases(3, {"a": 1}) or ""})
    worker = _worker(stream, edge, bundle, one_model, recording_sink)
    worker.step()
    worker.commit()
    (offsets, metadata), = edge.commits
    assert offsets == {("in", 0): 7} and metadata is not None
    found = decode_checkpoint(metadata[("in", 0)])
    assert found is not None and found.phases is None and found.alarms == worker.rule.states()  # type: ignore[union-attr]


def test_phases_that_do_not_fit_are_left_out_with_one_warning_per_partition(scripted_source: Any,
        bundle: Any, one_model: Any, recording_sink: Any, caplog: pytest.LogCaptureFixture) -> None:
    crowd = [_rec(0, i, f"sensor-{i:05d}", 0) for i in range(2000)]  # one reading each: over 4096 bytes
    edge = scripted_source([crowd, [_rec(1, 0, "alone", 0)], [_rec(0, 2000, "sensor-00000", 1)]])
    worker = _worker({"stride": 2}, edge, bundle, one_model, recording_sink)
    with caplog.at_level(logging.WARNING, logger="aestream.stream.phase"):
        for _ in range(3):
            worker.step()
            worker.commit()
    assert [m for _, m in edge.commits] == [{("in", 0): encode_checkpoint(2, None, {})},  # the alarm states alone
                                            {("in", 1): encode_checkpoint(2, {"alone": 1}, {})},
                                            {("in", 0): encode_checkpoint(2, None, {})}]
    warned = [r.getMessage() for r in caplog.records if r.name == "aestream.stream.phase"]
    assert len(warned) == 1 and "2000 sensors of in[0] does not fit" in warned[0]


@pytest.mark.parametrize("restored", [False, True])
def test_restored_phases_apply_after_the_replay_and_replayed_offsets_are_not_committed_again(scripted_source: Any,
        restored: bool, bundle: Any, one_model: Any, recording_sink: Any) -> None:
    # The previous owner committed offset 10 with "a" at phase 1 of stride 3: it had just closed a window at
    # offset 9, so its next ones end at 12 and 15. Replaying 5..9 alone counts 5 readings: windows at 11, 14.
    replay = [_rec(0, i, "a", i, replay=True) for i in range(5, 10)]
    live = [_rec(0, i, "a", i) for i in range(10, 16)]
    handoff = {("in", 0): encode_phases(3, {"a": 1}) or ""} if restored else {}
    edge = scripted_source([replay[:3], [], replay[3:] + live[:2], live[2:]], handoff=handoff)
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 3})
    worker = Worker(cfg, edge, recording_sink(), one_model(bundle, threshold=1e-9), clock=lambda: 0.0)
    worker.refresh_model(force=True)
    ends = [e["source"]["offset"] for _ in range(4) for e in worker.step().events_out]
    assert ends == ([12, 15] if restored else [11, 14])
    assert edge.commits == [], "the replay committed nothing, not even at the empty poll"
    worker.commit()
    assert edge.commits[-1][0] == {("in", 0): 16}
    assert decode_phases(edge.commits[-1][1][("in", 0)]) == (3, {"a": 1 if restored else 2})


def test_a_revoked_partition_forgets_its_pending_phases_and_foreign_metadata_is_ignored(scripted_source: Any,
        bundle: Any, one_model: Any, recording_sink: Any, caplog: pytest.LogCaptureFixture) -> None:
    edge = scripted_source([[_rec(0, 5, "a", 5, replay=True), _rec(1, 5, "b", 5, replay=True)], [_rec(1, 6, "b", 6)]],
                           handoff={("in", 0): encode_phases(3, {"a": 1}) or "", ("in", 1): "written by another tool"})
    worker = _worker({"stride": 3}, edge, bundle, one_model, recording_sink)
    worker.step()
    worker.on_partitions_changed([("in", 0)])
    assert worker.phases is not None and set(worker.phases.pending) == {("in", 1)}
    with caplog.at_level(logging.WARNING, logger="aestream.stream.phase"):
        worker.step()
    assert not worker.phases.pending and "holds no window phases" in caplog.text
    # no phases of ours: set to close at its first live reading ((4 - 1) % 3 = 0), which moved it one on
    assert worker.windows.phases(["b"]) == {"b": 1}




@pytest.mark.parametrize("smoothing", [1, 3])
def test_an_alarm_held_across_a_restart_holds_on_from_the_committed_alarm_state(scripted_source: Any,
        smoothing: int, bundle: Any, one_model: Any, recording_sink: Any) -> None:
    """A spike at reading 20 crosses in the windows ending 20..23 (and with smoothing after), then holds for the
    rest of threshold.n = 10 windows. The
    next owner of the partition, its commit at 26, replays 5 readings: windows 24 and 25. It rebuilt
    the alarm from them alone: the held windows up to 32 were not emitted (and an alert episode resolved early)."""
    cfg = Config().replace(baselines={"mode": "off"}, threshold={"k": 1, "n": 10, "smoothing": smoothing},
                           stream={"channels": CHANNELS, "window_size": 4})
    pre = bundle.scorer.preprocessor
    readings = np.tile(pre.mean, (40, 1))  # the model's operating point, then a reading 10 deviations out
    readings[20] += 10 * pre.std
    smoothed = causal_smooth(bundle.scorer.score(sliding_windows(readings, 4, 1)).scores, smoothing)
    threshold = 2 * float(smoothed[:17].max())  # the windows before the spike: well under it

    def rec(i: int, replay: bool = False) -> Record:
        return Record("in", 0, i, b"a", encode_reading("a", T0 + 1000 * i, readings[i].tolist()), 0, replay)

    def run(polls: list[list[Record]], handoff: dict | None = None) -> tuple[list[tuple[int, str]], Any]:
        n_polls, edge = len(polls), scripted_source(polls, handoff=handoff)
        worker = Worker(cfg, edge, recording_sink(), one_model(bundle, threshold=threshold), clock=lambda: 0.0)
        worker.refresh_model(force=True)
        events = [(e["source"]["offset"], e["alarm"]) for _ in range(n_polls) for e in worker.step().events_out]
        worker.commit()
        return events, edge

    whole, _ = run([[rec(i) for i in range(40)]])
    assert whole[0] == (20, "crossed") and whole[-1] == (32 + smoothing - 1, "held"), whole
    first, edge = run([[rec(i) for i in range(26)]])
    then, _ = run([[rec(i, replay=True) for i in range(21, 26)], [rec(i) for i in range(26, 40)]],
                  handoff=edge.metadata)
    assert first + then == whole
