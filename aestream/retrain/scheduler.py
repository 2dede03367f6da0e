"""The scheduler edge: the only module that imports APScheduler.

:func:`build_retraining` assembles, from the config, what the composition root needs: the reservoir stage to
hand to the :class:`~aestream.worker.Worker` and a :class:`Retraining` handle whose background scheduler runs
:meth:`~aestream.retrain.retrainer.Retrainer.run_once` on ``retrain.schedule`` (``max_instances=1``, coalesced: a run
never overlaps the previous one, missed runs collapse into one). :func:`schedule` does the same for a retrainer
built elsewhere (``aestream trainer``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aestream.config import Config, RetrainConfig
from aestream.errors import ConfigError
from aestream.kafka.protocols import ModelStoreLike
from aestream.retrain.retrainer import Retrainer, RetrainOutcome, open_reservoir
from aestream.retrain.stage import ReservoirStage

__all__ = ["JOB_ID", "Retraining", "build_retraining", "crontab_trigger", "make_trigger", "schedule"]

log = logging.getLogger(__name__)

JOB_ID = "aestream-retrain"


def make_trigger(cfg: RetrainConfig) -> BaseTrigger:
    """The APScheduler trigger for ``retrain.schedule``; a bad crontab is a :class:`ConfigError`."""
    if cfg.schedule == "interval":
        return IntervalTrigger(seconds=cfg.interval_s)
    try:
        trigger = crontab_trigger(cfg.cron)
    except ValueError as e:
        raise ConfigError(f"config key retrain.cron = {cfg.cron!r} is invalid ({e}): use five crontab fields, "
                          'e.g. "0 3 * * *" for 03:00 UTC daily') from None
    if trigger.get_next_fire_time(None, datetime.now(timezone.utc)) is None:
        raise ConfigError(f"config key retrain.cron = {cfg.cron!r} is invalid: it names no date that comes (a day "
                          "its months do not have?), so no retrain would ever run: fix the day and month fields")
    return trigger


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_trigger(line: str) -> BaseTrigger:
    """A trigger that fires as crontab reads ``line`` (UTC). APScheduler 3's own ``from_crontab`` counts weekdays
    from Monday (crontab: 0 and 7 are Sunday) and fires only when both day fields match (crontab: either, when
    both are restricted, neither starting with ``*``, ``*/2`` included); here the weekdays go to it by name, and two
    restricted day fields become two triggers.

    >>> t = crontab_trigger("0 3 1 * 1-5")  # the 1st of the month, and Monday to Friday
    >>> type(t).__name__, [f.name for f in t.triggers[1].fields if f.name == "day_of_week"]
    ('OrTrigger', ['day_of_week'])
    >>> str(crontab_trigger("0 3 * * 0,7").fields[4]), str(crontab_trigger("0 3 * * */2").fields[4])
    ('sun', 'sun,tue,thu,sat')
    """
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"{len(fields)} fields, not 5")
    minute, hour, day, month, weekday = fields
    days = _weekdays(weekday)
    common = {"minute": minute, "hour": hour, "month": month, "timezone": "UTC"}
    if days is not None and not day.startswith("*") and not weekday.startswith("*"):  # both restricted: either
        return OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=days, **common)])
    return CronTrigger(day=day, day_of_week=days or "*", **common)


def _weekdays(spec: str) -> str | None:
    """crontab's day-of-week field (``0``-``7`` or names, lists, ranges, steps) as APScheduler's day names;
    ``None`` for every day."""
    days: set[int] = set()
    for item in spec.lower().split(","):
        span, slash, step = item.partition("/")
        if span == "*":
            lo, hi = 0, 6
        else:
            a, dash, b = span.partition("-")
            lo = _weekday(a)
            hi = _weekday(b) if dash else (6 if slash else lo)
        n = int(step) if slash else 1
        if n < 1 or hi < lo:
            raise ValueError(f"day-of-week {item!r} names no day")
        days.update(d % 7 for d in range(lo, hi + 1, n))
    return None if len(days) == 7 else ",".join(_DAYS[d] for d in sorted(days))


def _weekday(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text[:3] in _DAYS and len(text) == 3:
        return _DAYS.index(text)
    raise ValueError(f"day-of-week {text!r} is not 0-7 (0 and 7: Sunday) or sun..sat")


class Retraining:
    """The running parts of scheduled retraining: ``stage`` (if any) feeds the reservoir, the scheduler retrains."""

    def __init__(self, stage: ReservoirStage | None, retrainer: Retrainer, scheduler: BackgroundScheduler) -> None:
        self.stage = stage
        self.retrainer = retrainer
        self.scheduler = scheduler

    def start(self) -> None:
        """Start the background scheduler (the first run comes one interval, or the next cron time, from now)."""
        self.scheduler.start()
        job = self.scheduler.get_job(JOB_ID)
        log.info("scheduled retraining: next run at %s", job.next_run_time if job else "?")

    def run_now(self) -> RetrainOutcome:
        """One retrain in the calling thread (``aestream retrain`` and tests)."""
        return self.retrainer.run_once(force=True)

    def close(self) -> None:
        """Stop the scheduler (a training in flight is killed) and save the reservoir."""
        self.retrainer.cancel()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.stage is not None:
            self.stage.save()


def build_retraining(cfg: Config, store: ModelStoreLike, *,
                     on_outcome: Callable[[RetrainOutcome], None] | None = None) -> Retraining | None:
    """Scheduled retraining as ``cfg.retrain`` describes it, or ``None`` when ``retrain.enabled`` is false."""
    r = cfg.retrain
    if not r.enabled:
        return None
    reservoir, path = open_reservoir(cfg)
    stage = ReservoirStage(reservoir, guard_s=r.guard_s, regime_change_after_s=r.regime_change_after_s,
                           sample_interval_s=r.sample_interval_s, path=path, save_every_s=r.save_every_s)
    retrainer = Retrainer(cfg, reservoir, store, on_outcome=on_outcome)
    return schedule(retrainer, stage)


def schedule(retrainer: Retrainer, stage: ReservoirStage | None = None) -> Retraining:
    """``retrainer`` on a background scheduler by ``retrain.schedule`` (started by :meth:`Retraining.start`)."""
    scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
    scheduler.add_job(retrainer.run_once, make_trigger(retrainer.cfg.retrain), id=JOB_ID, name="retrain",
                      max_instances=1, coalesce=True, misfire_grace_time=None)
    return Retraining(stage, retrainer, scheduler)
