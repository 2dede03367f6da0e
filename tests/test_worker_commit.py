"""The commit policy: events go out at once; flush then commit at most every kafka.commit_interval_ms, on an empty
poll and at shutdown; offsets whose events failed to flush are never committed; state goes to its changelog only
once the events it reflects are flushed."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

import aestream.worker as worker_module
from aestream.alerts import build_alert_stage
from aestream.config import Config
from aestream.errors import DeliveryError
from aestream.stream.messages import Outgoing, Partition, Record
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
T0 = 1_767_225_600_000


class _Log:
    """Source and sink in one: records every flush and commit in order, so their order can be checked."""

    def __init__(self, polls: list[list[Record]]) -> None:
        self.polls, self.calls, self.unflushed = polls, [], 0
        self.fail_flush = False
        self.refuse_commits = 0  # the next n commits fail (the broker is down, or the group moved on)

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        return self.polls.pop(0) if self.polls else []

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        assert self.unflushed == 0, "a commit before the events sent were flushed"
        if self.refuse_commits:
            self.refuse_commits -= 1
            self.calls.append(("refused", dict(offsets)))
            return False
        self.calls.append(("commit", dict(offsets)))
        return True

    def send(self, msg: Outgoing) -> None:
        self.unflushed += 1

    def flush(self, timeout_s: float = 60.0) -> None:
        if self.fail_flush:
            self.fail_flush = False
            raise RuntimeError("producing failed")
        self.calls.append(("flush", self.unflushed))
        self.unflushed = 0

    def close(self, timeout_s: float = 10.0) -> None: ...


def _poll(first: int, n: int) -> list[Record]:
    return [Record("in", 0, i, b"s", json.dumps({"sensor": "s", "ts": T0 + 1000 * i, "values": [1.0, 2, 3, 4]})
                   .encode(), 0) for i in range(first, first + n)]


@pytest.fixture()
def setup(train_small: Any, one_model: Any) -> Any:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1},
                           kafka={"commit_interval_ms": 100})
    now = [0.0]
    log = _Log([_poll(0, 10), _poll(10, 10), _poll(20, 10)])
    worker = Worker(cfg, log, log, one_model(train_small(cfg), threshold=1e-9),  # every window is an event
                    clock=lambda: now[0])
    worker.refresh_model(force=True)
    return worker, log, now


def test_commits_wait_for_the_interval_or_an_empty_poll_and_always_follow_a_flush(setup: Any) -> None:
    worker, log, now = setup
    assert worker.step().events == 7 and log.calls == []  # sent at once, committed later
    now[0] = 0.05
    worker.step()
    assert log.calls == []
    now[0] = 0.15
    worker.step()
    assert log.calls == [("flush", 27), ("commit", {("in", 0): 30})]
    worker.step()  # empty: nothing left to commit
    assert len(log.calls) == 2


def test_an_empty_poll_and_shutdown_each_commit_what_is_pending(setup: Any) -> None:
    worker, log, _ = setup
    worker.step()
    worker.step()
    log.polls.insert(0, [])
    worker.step()  # empty poll
    assert log.calls == [("flush", 17), ("commit", {("in", 0): 20})]  # 7 + 10 windows, all events
    worker.step()
    worker.close()
    assert log.calls[-1] == ("commit", {("in", 0): 30})


def test_a_stop_whose_last_commit_the_broker_did_not_take_says_so_and_fails(setup: Any) -> None:
    worker, log, _ = setup
    worker.step()
    log.refuse_commits = 1  # the broker away: every event acknowledged, the offsets not committed
    with pytest.raises(DeliveryError, match=r"stopped without committing the last offsets: the broker did not "
                                            r"commit the offsets\. The records since the last commit are read again"):
        worker.close()
    assert log.calls == [("flush", 7), ("refused", {("in", 0): 10})]


def test_offsets_whose_events_failed_to_flush_are_never_committed(setup: Any) -> None:
    worker, log, now = setup
    worker.step()
    log.fail_flush = True
    now[0] = 0.2
    with pytest.raises(RuntimeError, match="producing failed"):
        worker.step()
    worker.close()  # the next flush would succeed, but those records must be read again
    assert [c for c in log.calls if c[0] == "commit"] == []
    with pytest.raises(DeliveryError, match="commits nothing more"):
        worker.step()  # a later record's offset committed would skip the lost ones


def test_a_failed_commit_is_retried_after_a_pause_with_the_newer_offsets_and_never_kills_the_loop(setup: Any) -> None:
    worker, log, now = setup
    log.refuse_commits = 1
    worker.step()
    log.polls.insert(0, [])
    worker.step()  # empty poll: commit, refused
    assert log.calls[-1] == ("refused", {("in", 0): 10})
    now[0] = 0.5
    worker.step()  # records 10..19, then 20..29: the interval is over, but a retry waits COMMIT_RETRY_S
    log.polls.insert(1, [])
    worker.step()
    assert log.calls[-1][0] == "refused"
    now[0] = 1.2
    worker.step()  # the empty poll after the pause: the offsets kept, moved on by the newer records
    assert log.calls[-1] == ("commit", {("in", 0): 30})


def test_a_partition_that_moved_away_is_not_committed(setup: Any) -> None:
    worker, log, _ = setup
    worker.step()
    worker.on_partitions_changed([("in", 0)])
    worker.close()
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {})]


class _Changelog:
    """An alerts changelog whose records count as soon as the producer has them: nothing orders the deliveries
    to two topics' partitions (another broker may lead them), so one may land while an earlier one fails."""

    topic = "alerts-changelog"

    def __init__(self) -> None:
        self.log: dict[str, bytes] = {}

    def record(self, part: Partition, key: str, value: bytes) -> Outgoing:
        return Outgoing(self.topic, value, key.encode(), [], part[1])

    def restore(self, parts: list[Partition]) -> dict[Partition, dict[str, bytes]]:  # one input partition here
        return {parts[0]: dict(self.log)} if parts else {}


class _Producer:
    """A sink: changelog records are delivered when sent, the rest when flushed; with ``fail`` set the flush
    fails and what it held is lost."""

    def __init__(self, changelog: _Changelog, fail: bool = False) -> None:
        self.changelog, self.fail = changelog, fail
        self.pending: list[Outgoing] = []
        self.delivered: list[Outgoing] = []

    def send(self, msg: Outgoing) -> None:
        if msg.topic == self.changelog.topic:
            assert msg.key is not None
            self.changelog.log[msg.key.decode()] = msg.value
        else:
            self.pending.append(msg)

    def flush(self, timeout_s: float = 60.0) -> None:
        pending, self.pending = self.pending, []
        if self.fail:
            raise RuntimeError("producing failed")
        self.delivered += pending

    def close(self, timeout_s: float = 10.0) -> None: ...


def _alerting(tmp_path: Any) -> Config:
    return Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1},
                            kafka={"commit_interval_ms": 0}, alerts={"enabled": True},
                            paths={"state_dir": str(tmp_path)})


def _alert_worker(cfg: Config, model: Any, changelog: _Changelog, sink: Any, log: _Log | None = None) -> Worker:
    """A worker with an alert stage over ``changelog``, given partition in[0] (its offsets never committed), its
    first poll the records 0..9."""
    stage = build_alert_stage(cfg, changelog=changelog)
    assert stage is not None
    w = Worker(cfg, log or _Log([_poll(0, 10)]), sink, model, stages=[stage])
    w.refresh_model(force=True)
    stage.on_assigned([("in", 0)])
    return w


def test_alert_state_goes_out_after_its_events_so_a_replay_after_a_failed_flush_emits_them(
        train_small: Any, one_model: Any, tmp_path: Any) -> None:
    cfg = _alerting(tmp_path)
    model, changelog = one_model(train_small(cfg), threshold=1e-9), _Changelog()  # every window an event
    with pytest.raises(RuntimeError, match="producing failed"):  # the episode's opened event is lost with the flush
        _alert_worker(cfg, model, changelog, _Producer(changelog, fail=True)).step()
    assert changelog.log == {}, "no state was written ahead of its events"
    again = _Producer(changelog)
    # the next owner reads the same records: the episode opens again, same event id
    _alert_worker(cfg, model, changelog, again).step()
    alerts = [json.loads(m.value) for m in again.delivered if m.topic == cfg.alerts.topic]
    assert [e["type"] for e in alerts] == ["opened"]
    assert json.loads(changelog.log["s"])["episode"]["open"]["episode_id"] == alerts[0]["episode_id"]


def test_after_a_failed_flush_the_stop_writes_no_state_of_the_lost_events(train_small: Any, one_model: Any,
                                                                             tmp_path: Any) -> None:
    cfg = _alerting(tmp_path)
    changelog, log = _Changelog(), _Log([_poll(0, 10)])
    producer = _Producer(changelog, fail=True)
    w = _alert_worker(cfg, one_model(train_small(cfg), threshold=1e-9), changelog, producer, log)
    with pytest.raises(RuntimeError, match="producing failed"):
        w.step()  # the episode's opened event is lost with the flush
    producer.fail = False  # the broker is back
    w.close()  # as run() closes after a failed step
    assert changelog.log == {}, "an episode whose opened event was lost was written: a replay would not emit it"
    assert log.calls == []


class _RaisingSend(_Producer):
    """A sink whose send to ``topic`` raises once, as kafka-python's does after max_block_ms (no metadata, a full
    buffer): the message is not queued."""

    def __init__(self, changelog: _Changelog, topic: str) -> None:
        super().__init__(changelog)
        self.topic: str | None = topic

    def send(self, msg: Outgoing) -> None:
        if msg.topic == self.topic:
            self.topic = None
            raise DeliveryError(f"producing to {msg.topic} failed: KafkaTimeoutError")
        super().send(msg)


def test_a_send_that_raised_writes_no_state_and_commits_nothing_so_the_next_owner_emits_its_event(
        train_small: Any, one_model: Any, tmp_path: Any) -> None:
    cfg = _alerting(tmp_path)
    model, changelog, log = one_model(train_small(cfg), threshold=1e-9), _Changelog(), _Log([_poll(0, 10)])
    first = _alert_worker(cfg, model, changelog, _RaisingSend(changelog, cfg.alerts.topic), log)
    with pytest.raises(DeliveryError):
        first.step()  # the episode's opened alert is not queued
    first.close()  # as run() closes after a failed step
    assert changelog.log == {} and log.calls == []
    again = _Producer(changelog)
    _alert_worker(cfg, model, changelog, again).step()  # the next owner reads the same records
    assert [json.loads(m.value)["type"] for m in again.delivered if m.topic == cfg.alerts.topic] == ["opened"]


def _state_file_worker(cfg: Config, model: Any, sink: Any, log: Any) -> Worker:
    """A worker with an alert stage that keeps its state in the state file (no changelog: a source without
    Kafka, as ``aestream evaluate`` runs)."""
    stage = build_alert_stage(cfg)
    assert stage is not None and stage.state_path is not None
    w = Worker(cfg, log, sink, model, stages=[stage])
    w.refresh_model(force=True)
    return w


def test_after_a_failed_flush_the_stop_writes_no_state_file_and_a_restart_emits_the_lost_event(
        train_small: Any, one_model: Any, tmp_path: Any) -> None:
    cfg = _alerting(tmp_path)
    model, producer = one_model(train_small(cfg), threshold=1e-9), _Producer(_Changelog(), fail=True)
    first = _state_file_worker(cfg, model, producer, _Log([_poll(0, 10)]))
    with pytest.raises(RuntimeError, match="producing failed"):
        first.step()  # the episode's opened event is lost with the flush
    producer.fail = False
    first.close()  # as run() closes after a failed step
    assert not (tmp_path / cfg.alerts.state_file).exists(), "the state of a lost event was saved"
    again = _Producer(_Changelog())
    second = _state_file_worker(cfg, model, again, _Log([_poll(0, 10)]))  # the same records, read again
    second.step()
    second.close()
    assert [json.loads(m.value)["type"] for m in again.delivered if m.topic == cfg.alerts.topic] == ["opened"]
    assert "s" in json.loads((tmp_path / cfg.alerts.state_file).read_text())["episodes"]


def test_the_state_file_is_written_once_its_events_are_acknowledged_and_before_their_offsets_commit(
        train_small: Any, one_model: Any, tmp_path: Any) -> None:
    cfg = _alerting(tmp_path)
    state = tmp_path / cfg.alerts.state_file

    class Checked(_AckLog):
        def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
            assert state.exists(), "offsets committed before the state file reflecting them was written"
            return super().commit(offsets)

    log = Checked([_poll(0, 10), _poll(10, 10)])
    worker = _state_file_worker(cfg, one_model(train_small(cfg), threshold=1e-9), log, log)
    worker.step()  # the episode opens; the commit begins
    worker.step()
    assert not state.exists(), "written before its opened event was acknowledged"
    log.ack()
    worker.step()  # an empty poll: the commit in flight, then one of the records after it
    assert state.exists() and [c[1] for c in log.calls] == [{("in", 0): 10}, {("in", 0): 20}]


def test_a_stop_after_a_failure_names_what_the_stages_had_left_to_send(setup: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from aestream.stream.stages import Stage

    class _Leftover(Stage):
        def close(self) -> list[Outgoing]:  # a webhook delivery given up on: its dead letter
            return [Outgoing("dlq", b"event", b"s")]

    worker, log, now = setup
    worker.stages.append(_Leftover())
    worker.step()
    log.fail_flush = True
    now[0] = 0.2
    with pytest.raises(RuntimeError, match="producing failed"):
        worker.step()
    sent = log.unflushed
    with caplog.at_level(logging.WARNING, logger="aestream.worker"):
        worker.close()
    assert "1 message(s) of _Leftover not sent (the worker stops after a failure): dlq" in caplog.text
    assert log.unflushed == sent


class _AckLog(_Log):
    """A source and a sink whose messages are acknowledged when the test says (:meth:`ack`), as a Kafka sink's
    are by the broker while the worker goes on polling."""

    def __init__(self, polls: list[list[Record]]) -> None:
        super().__init__(polls)
        self.sent: list[Outgoing] = []
        self.n_acked = 0
        self.fail_acks = False
        self.away = False  # the broker acknowledges nothing, however long the worker waits

    def send(self, msg: Outgoing) -> None:
        self.sent.append(msg)

    def flush(self, timeout_s: float = 60.0) -> None:
        self.calls.append(("flush", len(self.sent) - self.n_acked))
        if self.away:
            raise RuntimeError(f"not acknowledged within {timeout_s} s")  # as kafka-python's flush raises
        self.ack()

    def mark(self) -> int:
        return len(self.sent)

    def acked(self, mark: int, timeout_s: float = 0.0) -> bool:
        if self.fail_acks:
            raise RuntimeError("producing failed")
        if timeout_s > 0 and mark > self.n_acked:  # the worker waits: the broker answers meanwhile, unless away
            self.calls.append(("wait", mark - self.n_acked))
            if self.away:
                time.sleep(timeout_s)
            else:
                self.ack()
        return mark <= self.n_acked

    def ack(self) -> None:
        self.n_acked = len(self.sent)

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        self.calls.append(("commit", dict(offsets), self.n_acked))
        return True


@pytest.fixture()
def acks(train_small: Any, one_model: Any) -> Any:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1},
                           kafka={"commit_interval_ms": 100})
    now = [0.0]
    log = _AckLog([_poll(0, 10), _poll(10, 10), _poll(20, 10), _poll(30, 10), _poll(40, 10)])
    worker = Worker(cfg, log, log, one_model(train_small(cfg), threshold=1e-9), clock=lambda: now[0])
    worker.refresh_model(force=True)
    return worker, log, now


def test_with_acknowledgements_the_loop_polls_on_and_commits_once_the_events_are_acknowledged(acks: Any) -> None:
    worker, log, now = acks
    worker.step()
    now[0] = 0.15
    assert worker.step().records == 10  # the commit begins: 17 events in flight
    assert log.calls == []
    assert worker.step().records == 10, "the loop waited for the acknowledgements"
    assert log.calls == []
    log.ack()  # all 27: the commit in flight goes out with the offsets taken when it began
    worker.step()
    assert log.calls == [("commit", {("in", 0): 20}, 27)]
    now[0] = 0.3
    worker.step()  # the commit begins
    assert len(log.calls) == 1
    worker.step()  # an empty poll: it waits for what is in flight, then commits
    assert log.calls[1:] == [("wait", 20), ("commit", {("in", 0): 50}, 47)]


def test_an_empty_poll_waits_a_while_for_a_broker_that_is_away_and_then_polls_on(
        acks: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    worker, log, now = acks
    monkeypatch.setattr(worker_module, "ACK_WAIT_S", 0.3)
    caplog.set_level(logging.INFO, logger="aestream.worker")
    worker.step()
    now[0] = 0.15
    worker.step()  # the commit begins
    log.away = True
    for _ in range(3):
        assert worker.step().records == 10  # the loop polls on: nothing waits for the broker
    for _ in range(2):
        assert worker.step().records == 0  # an empty poll waits 0.3 s for it, then the step ends: nothing fails
    assert [c for c in log.calls if c[0] == "commit"] == [], "offsets committed before their events were acknowledged"
    assert [c[0] for c in log.calls].count("wait") >= 6  # each empty poll waited (in slices)
    assert caplog.text.count("has not acknowledged") == 1, "said once, not at every poll"
    log.away = False
    worker.step()  # the broker is back: the next empty poll commits what it waited for, then the rest
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {("in", 0): 20}, 47),
                                                           ("commit", {("in", 0): 50}, 47)]
    assert "acknowledges again" in caplog.text


def test_state_goes_out_once_its_events_are_acknowledged_and_the_offsets_once_the_state_is(
        train_small: Any, one_model: Any, tmp_path: Any) -> None:
    cfg = _alerting(tmp_path)
    changelog = _Changelog()
    stage = build_alert_stage(cfg, changelog=changelog)
    assert stage is not None
    log = _AckLog([_poll(0, 10), _poll(10, 10), _poll(20, 10), _poll(30, 10)])
    worker = Worker(cfg, log, log, one_model(train_small(cfg), threshold=1e-9), stages=[stage])
    worker.refresh_model(force=True)
    stage.on_assigned([("in", 0)])

    def topics() -> list[str]:
        return [m.topic for m in log.sent]

    worker.step()  # the episode opens; the commit begins, its state held back
    assert changelog.topic not in topics() and cfg.alerts.topic in topics()
    worker.step()
    assert changelog.topic not in topics() and log.calls == []
    log.ack()
    n_before = len(log.sent)
    worker.step()  # the events of the commit in flight are acknowledged: its state is sent, the offsets wait
    assert [m.topic for m in log.sent[n_before:]].count(changelog.topic) == 1
    assert log.calls == []
    log.ack()
    n_acked = len(log.sent)
    worker.step()
    assert log.calls == [("commit", {("in", 0): 10}, n_acked)]


def test_alert_state_in_flight_of_a_partition_that_moved_is_not_written(
        train_small: Any, one_model: Any, tmp_path: Any) -> None:
    """Its new owner may have written newer state meanwhile: a late write would put the old one back."""
    cfg = _alerting(tmp_path)
    stage = build_alert_stage(cfg, changelog=_Changelog())
    assert stage is not None
    log = _AckLog([_poll(0, 10)])
    worker = Worker(cfg, log, log, one_model(train_small(cfg), threshold=1e-9), stages=[stage])
    worker.refresh_model(force=True)
    stage.on_assigned([("in", 0)])
    worker.step()  # the episode opens; the commit begins, its state held back
    worker.on_partitions_changed([("in", 0)])
    log.ack()
    worker.step()  # an empty poll: the commit in flight ends without the partition
    worker.close()
    assert _Changelog.topic not in [m.topic for m in log.sent]
    assert all(c[1] == {} for c in log.calls if c[0] == "commit"), "nor its offsets committed"


@pytest.mark.parametrize("empty_poll", [False, True], ids=["while-polling", "while-an-empty-poll-waited"])
def test_offsets_in_flight_whose_events_failed_are_never_committed(acks: Any, empty_poll: bool) -> None:
    worker, log, now = acks
    worker.step()
    now[0] = 0.15
    worker.step()  # the commit begins
    if empty_poll:
        log.polls.insert(0, [])  # the next poll is empty: it waits for the commit in flight
    log.fail_acks = True
    with pytest.raises(RuntimeError, match="producing failed"):
        worker.step()  # its events failed
    log.fail_acks = False
    worker.close()  # the sink would flush now: the failure was settled when it raised
    assert [c for c in log.calls if c[0] == "commit"] == []


def test_a_partition_that_moved_while_its_commit_was_in_flight_is_not_committed(acks: Any) -> None:
    worker, log, now = acks
    worker.step()
    now[0] = 0.15
    worker.step()  # the commit begins
    worker.on_partitions_changed([("in", 0)])
    log.ack()
    worker.close()
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {}, len(log.sent))]


class _AsyncLog(_AckLog):
    """An :class:`_AckLog` whose source also commits without waiting: each commit is held until the test gives
    the broker's answer (:meth:`answer`), as a Kafka source's later poll does."""

    def __init__(self, polls: list[list[Record]]) -> None:
        super().__init__(polls)
        self.unanswered: list[tuple[dict[Partition, int], Any]] = []

    def commit_async(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None, done: Any) -> None:
        self.calls.append(("sent", dict(offsets), self.n_acked))
        self.unanswered.append((offsets, done))

    def answer(self, ok: bool, newest: bool = False) -> None:
        offsets, done = self.unanswered.pop(-1 if newest else 0)
        done(offsets, ok)


@pytest.fixture()
def async_commits(train_small: Any, one_model: Any) -> Any:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1},
                           kafka={"commit_interval_ms": 100})
    now = [0.0]
    log = _AsyncLog([_poll(0, 10), _poll(10, 10)])
    worker = Worker(cfg, log, log, one_model(train_small(cfg), threshold=1e-9), clock=lambda: now[0])
    worker.refresh_model(force=True)
    worker.step()
    now[0] = 0.15
    worker.step()  # the commit begins
    log.ack()
    return worker, log, now


def _sent(log: _Log) -> list[dict[Partition, int]]:
    return [c[1] for c in log.calls if c[0] == "sent"]


def test_offsets_go_out_without_waiting_and_one_refused_goes_again_after_the_pause(async_commits: Any) -> None:
    worker, log, now = async_commits
    worker.step()  # an empty poll: the events are acknowledged, the offsets are sent; no answer is awaited
    assert log.calls == [("sent", {("in", 0): 20}, 17)]
    now[0] = 0.2
    log.answer(ok=False)  # the group moved on, or the broker is away
    now[0] = 0.5
    worker.step()  # a failed commit's pause
    assert len(_sent(log)) == 1
    now[0] = 1.3
    worker.step()
    assert _sent(log) == [{("in", 0): 20}, {("in", 0): 20}]
    log.answer(ok=True)
    worker.close()
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {}, 17)], "nothing left to commit at close"


def _two_commits_sent(train_small: Any, one_model: Any) -> tuple[Worker, _AsyncLog]:
    """A worker that has sent two commits of one partition, each after an empty poll, neither answered."""
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1},
                           kafka={"commit_interval_ms": 0})
    log = _AsyncLog([_poll(0, 10), [], _poll(10, 10), []])
    worker = Worker(cfg, log, log, one_model(train_small(cfg), threshold=1e-9))
    worker.refresh_model(force=True)
    for _ in range(4):
        worker.step()
    return worker, log


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_refused_commit_never_takes_its_partition_back_behind_a_newer_one(
        train_small: Any, one_model: Any, newest_first: bool) -> None:
    worker, log = _two_commits_sent(train_small, one_model)
    assert _sent(log) == [{("in", 0): 10}, {("in", 0): 20}]
    if newest_first:  # kafka-python hands out the answers that came between two polls newest first
        log.answer(ok=True, newest=True)
        log.answer(ok=False)
    else:
        log.answer(ok=False)  # the newer one is on its way: this one is not sent again
        log.answer(ok=True)
    worker.close()
    assert [c[1] for c in log.calls if c[0] in ("sent", "commit")] == [{("in", 0): 10}, {("in", 0): 20}, {}]


def test_the_newer_of_two_refused_commits_goes_again(train_small: Any, one_model: Any) -> None:
    worker, log = _two_commits_sent(train_small, one_model)
    log.answer(ok=False)
    log.answer(ok=False)
    worker.close()  # commits, waiting: the newest offset
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {("in", 0): 20}, len(log.sent))]


def test_close_commits_offsets_whose_answer_has_not_come(async_commits: Any) -> None:
    worker, log, _ = async_commits
    worker.step()
    assert _sent(log) == [{("in", 0): 20}]
    worker.close()  # the answer may never come once the consumer closes: committed again, waiting
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {("in", 0): 20}, 17)]
    log.answer(ok=False)  # a late answer changes nothing
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {("in", 0): 20}, 17)]


def test_close_right_after_a_step_that_sent_a_commit_and_began_the_next_commits_the_newer(
        train_small: Any, one_model: Any) -> None:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1},
                           kafka={"commit_interval_ms": 100})
    now = [0.0]
    log = _AsyncLog([_poll(0, 10), _poll(10, 10), _poll(20, 10)])
    worker = Worker(cfg, log, log, one_model(train_small(cfg), threshold=1e-9), clock=lambda: now[0])
    worker.refresh_model(force=True)
    worker.step()
    now[0] = 0.15
    worker.step()  # the commit of offset 20 begins
    log.ack()
    now[0] = 0.3
    worker.step()  # sends offset 20 (no answer yet), reads 20..29 and begins the commit of 30
    assert _sent(log) == [{("in", 0): 20}]
    worker.close()  # used to commit 20: the older unanswered offset overwrote the newer one in flight
    assert [c[1] for c in log.calls if c[0] == "commit"] == [{("in", 0): 30}]


def test_a_refused_commit_of_a_partition_that_moved_is_not_sent_again(async_commits: Any) -> None:
    worker, log, now = async_commits
    worker.step()
    worker.on_partitions_changed([("in", 0)])
    log.answer(ok=False)
    now[0] = 2.0
    worker.step()
    worker.close()
    assert _sent(log) == [{("in", 0): 20}]
    assert [c for c in log.calls if c[0] == "commit"] == [("commit", {}, 17)]
