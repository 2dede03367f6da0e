"""The count behind ``sensor_late_readings`` (:mod:`aestream.stream.lateness`): at most one report per sensor per
period, as docs/formats.md promises ("at most once a minute")."""

from __future__ import annotations

from aestream.stream.lateness import LateWatch


def test_a_sensor_is_reported_at_most_once_a_period_however_its_counts_fall() -> None:
    w = LateWatch(100, 60.0)
    assert w.observe({"s": 99}, now=0.0) == []
    assert [r.n_late for r in w.observe({"s": 1}, now=59.0)] == [100]
    assert w.observe({"s": 100}, now=60.0) == [], "one second after the last report"
    assert w.observe({"s": 100}, now=118.0) == []
    assert [r.n_late for r in w.observe({"s": 1}, now=119.0)] == [201], "a period after the last report"


def test_a_sensor_reported_recently_is_not_forgotten_with_the_quiet_ones() -> None:
    w = LateWatch(100, 60.0)
    w.observe({"s": 99}, now=0.0)
    assert [r.sensor for r in w.observe({"s": 1}, now=59.0)] == ["s"]
    assert w.observe({"t": 1}, now=61.0) == []  # forgets the sensors quiet for a period
    assert w.observe({"s": 100}, now=62.0) == [], "three seconds after the last report"


def test_a_sensor_is_counted_afresh_once_a_period_passed_without_a_report() -> None:
    w = LateWatch(100, 60.0)
    assert w.observe({"s": 99}, now=0.0) == []
    assert w.observe({"s": 99}, now=60.0) == []  # the first 99 fell out of the count
    assert [r.n_late for r in w.observe({"s": 1}, now=61.0)] == [100]


def test_a_count_held_back_by_the_last_report_is_reported_after_it_with_every_reading_since() -> None:
    w = LateWatch(100, 60.0)
    w.observe({"s": 1}, now=0.0)
    assert [r.n_late for r in w.observe({"s": 99}, now=59.0)] == [100]
    assert w.observe({"s": 100}, now=61.0) == [], "two seconds after the last report"
    assert w.observe({"s": 50}, now=100.0) == []  # past its count's period: it goes on counting, not afresh
    reports = w.observe({}, now=125.0)  # no late reading in this step: the report waiting is made anyway
    assert [(r.sensor, r.n_late, r.period_s) for r in reports] == [("s", 150, 64.0)]
    assert not w.due and w.observe({"s": 1}, now=126.0) == []
