"""A batch emitted but not committed before a kill -9 is replayed by the next worker, whose lookback starts
mid-stream, and is reported again under the same window ends, hence the same event ids (which consumers
deduplicate): with windows on the event-time grid (``stream.stride_ms``) because the grid depends on the readings
alone; with a count ``stream.stride > 1`` because each commit carries the sensors' count phase as metadata, which
the next worker restores once its replay reaches the committed offset. In-process, with a fake edge that stores
and hands out that metadata as the Kafka sources do (the real-broker version: tests/integration/
test_restart_phase_e2e.py)."""

from __future__ import annotations

from typing import Any

import pytest

from aestream.config import Config
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Record
from aestream.stream.phase import decode_checkpoint
from aestream.worker import Worker

pytestmark = pytest.mark.faults

T0 = 1_767_225_600_000
CHANNELS = ("temperature", "pressure", "vibration", "current")
SENSORS = ("a", "b", "c")


def _records(n: int) -> list[Record]:
    """Three sensors on one partition, unevenly interleaved (their counts, hence phases, differ)."""
    out = []
    for i in range(n):
        s = SENSORS[0 if i % 5 < 2 else 1 if i % 5 < 4 else 2]
        out.append(Record("in", 0, i, s.encode(), encode_reading(s, T0 + i * 1000, [1.0 + i % 7, 2.0, 3.0, 4.0]), 0))
    return out


@pytest.mark.parametrize("stream", [{"stride": 1, "stride_ms": 4000}, {"stride": 4}, {"stride": 3}],
                         ids=["stride_ms", "count", "count3"])
def test_a_replayed_uncommitted_batch_repeats_the_same_event_ids(scripted_source: Any, train_small: Any,
                                                                 one_model: Any, recording_sink: Any,
                                                                 stream: dict) -> None:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 16, **stream},
                           kafka={"rebuild_lookback_messages": 100})
    bundle = train_small(cfg)
    recs = _records(300)
    committed, crashed_at = 181, 240  # worker A emitted up to 240, committed 181, then kill -9
    edge_a = scripted_source([recs[:committed], recs[committed:crashed_at]])
    a = Worker(cfg, edge_a, recording_sink(), one_model(bundle, threshold=1e-9), clock=lambda: 0.0)
    a.refresh_model(force=True)
    a.step()
    a.commit()
    first = {e["event_id"] for e in a.step().events_out}  # not committed: the crash comes first
    assert edge_a.offsets == {("in", 0): committed}
    found = decode_checkpoint(edge_a.metadata[("in", 0)])
    assert found is not None and (found.phases is None) == bool(stream.get("stride_ms")), "phases: a count stride's"

    lookback = cfg.kafka.rebuild_lookback_messages  # what the Kafka sources replay with replay=True
    replay = [r._replace(replay=True) for r in recs[committed - lookback:committed]]
    live = recs[committed:crashed_at]
    edge_b = scripted_source([replay[:40], replay[40:] + live[:10], live[10:]], handoff=edge_a.metadata)
    b = Worker(cfg, edge_b, recording_sink(), one_model(bundle, threshold=1e-9), clock=lambda: 0.0)
    b.refresh_model(force=True)
    again = {e["event_id"] for _ in range(3) for e in b.step().events_out}
    assert len(first) >= 9 and again == first
    b.commit()
    assert edge_b.offsets == {("in", 0): crashed_at}, "replayed offsets are not committed again"
    if stream.get("stride_ms", 0) == 0:  # B's phases go on as A's would have
        a.commit()
        assert edge_b.metadata == edge_a.metadata


def test_without_the_committed_phases_a_count_stride_shifts(scripted_source: Any, train_small: Any, one_model: Any,
                                                            recording_sink: Any) -> None:
    """The control: the same rebuild with the metadata lost (committed by an older worker, or too large)."""
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 16, "stride": 4},
                           kafka={"rebuild_lookback_messages": 100})
    bundle = train_small(cfg)
    recs = _records(240)
    a = Worker(cfg, scripted_source([recs]), recording_sink(), one_model(bundle, threshold=1e-9), clock=lambda: 0.0)
    a.refresh_model(force=True)
    first = {e["event_id"] for e in a.step().events_out if e["source"]["offset"] >= 181}
    b = Worker(cfg, scripted_source([[r._replace(replay=True) for r in recs[81:181]], recs[181:]]), recording_sink(),
               one_model(bundle, threshold=1e-9), clock=lambda: 0.0)
    b.refresh_model(force=True)
    again = {e["event_id"] for _ in range(2) for e in b.step().events_out}
    assert again != first, "the replay counted from its start: some windows end elsewhere"


@pytest.mark.parametrize(("window", "stride"), [(8, 8), (16, 4), (8, 5)], ids=["tumbling", "w16s4", "w8s5"])
def test_without_the_committed_phases_every_reading_is_still_in_a_reported_window(
        scripted_source: Any, train_small: Any, one_model: Any, recording_sink: Any, window: int, stride: int) -> None:
    cfg = Config().replace(baselines={"mode": "off"},
                           stream={"channels": CHANNELS, "window_size": window, "stride": stride},
                           kafka={"rebuild_lookback_messages": 100})
    bundle = train_small(cfg)
    recs, committed = _records(300), 181
    a = Worker(cfg, scripted_source([recs[:committed]]), recording_sink(), one_model(bundle, threshold=1e-9),
               clock=lambda: 0.0)
    a.refresh_model(force=True)
    reported = a.step().events_out
    # the commit went without phases (too many sensors for its metadata): the edge hands out "" for it
    replay = [r._replace(replay=True) for r in recs[committed - 100:committed]]
    b = Worker(cfg, scripted_source([replay, recs[committed:]], handoff={("in", 0): ""}), recording_sink(),
               one_model(bundle, threshold=1e-9), clock=lambda: 0.0)
    b.refresh_model(force=True)
    reported += [e for _ in range(2) for e in b.step().events_out]
    stamps = {s: [T0 + i * 1000 for i, r in enumerate(recs) if r.key == s.encode()] for s in SENSORS}
    for s, ts in stamps.items():
        windows = [(e["window_start_ms"], e["window_end_ms"]) for e in reported if e["sensor"] == s]
        last = max(end for _, end in windows)
        missed = [t for t in ts if t <= last and not any(lo <= t <= hi for lo, hi in windows)]
        assert missed == [], f"readings of {s} in no reported window"
