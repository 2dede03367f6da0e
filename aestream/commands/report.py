"""``aestream report``: one self-contained HTML page (or one PNG) from anomaly events.

Input documents (JSON lines, or read from the output topic by the CLI) are sorted by their ``type``:

* ``anomaly``: an anomaly event (``aestream.stream.events``): a marker on its sensor's timeline, coloured by severity;
* ``opened`` / ``updated`` / ``resolved`` with an ``episode_id``: alert episodes, drawn as shaded spans;
* ``score``: optional plain score points ``{"sensor", "window_end_ms", "score", "threshold"}`` (a debug dump of
  every scored window), drawn as the score line under the markers.

The page shows a summary, the per-sensor score timeline with its threshold, the channel contributions of the
top anomalies and a table of them. Needs matplotlib (``pip install 'aestream[report]'``); no pyplot state is
touched, so it is safe inside other programs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from aestream.errors import AestreamError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Episode", "ReportData", "SensorSeries", "collect", "contributions_figure", "read_events",
           "render_html", "render_png", "timeline_figure", "write_report"]

log = logging.getLogger(__name__)

EPISODE_TYPES = ("opened", "updated", "resolved")
SEVERITY_COLOURS = {"warning": "#f28e2b", "critical": "#d62728"}
DEFAULT_TOP_N = 8
DEFAULT_MAX_SENSORS = 8
_TIME_KEYS = ("window_end_ms", "ts_ms", "time_ms", "at_ms")
_START_KEYS = ("start_ms", "opened_ms", "started_ms", "window_start_ms")
_END_KEYS = ("end_ms", "resolved_ms", "ended_ms", "last_ms")


@dataclass
class Episode:
    """One alert episode of a sensor: from its first to its last event (``end_ms`` ``None`` while open)."""

    episode_id: str
    sensor: str
    start_ms: int
    end_ms: int | None
    severity: str


@dataclass
class SensorSeries:
    """What one sensor's timeline shows."""

    sensor: str
    scores: list[tuple[int, float, float]] = field(default_factory=list)  # (window_end_ms, score, threshold)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)


@dataclass
class ReportData:
    """The documents sorted for drawing: per-sensor series and the top anomalies by score/threshold ratio."""

    sensors: dict[str, SensorSeries]
    top: list[dict[str, Any]]
    n_documents: int
    ignored: int

    @property
    def anomalies(self) -> list[dict[str, Any]]:
        return [a for s in self.sensors.values() for a in s.anomalies]

    @property
    def episodes(self) -> list[Episode]:
        return [e for s in self.sensors.values() for e in s.episodes]


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The JSON documents of a JSON-lines file (a file holding one JSON array works too)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AestreamError(f"events file {p} not found: pass --events with a JSON-lines file of events") from None
    except (OSError, UnicodeDecodeError) as e:  # a directory, no permission, not UTF-8
        why = e.strerror if isinstance(e, OSError) else f"not UTF-8: {e.reason} at byte {e.start}"
        raise AestreamError(f"events file {p} cannot be read ({why}): pass --events with a JSON-lines file of "
                            "events") from None
    if text.lstrip().startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError as e:
            raise AestreamError(f"events file {p} is not a JSON array ({e}): write one event per line, or one "
                                "array of them") from None
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AestreamError(f"events file {p} line {n} is not JSON ({e}): write one event per line") from None
    return docs


def collect(docs: Iterable[dict[str, Any]], top_n: int = DEFAULT_TOP_N) -> ReportData:
    """Sort documents into per-sensor series and pick the ``top_n`` anomalies by ratio.

    >>> d = collect([{"type": "anomaly", "sensor": "a", "window_end_ms": 5, "score": 3.0, "threshold": 1.0,
    ...               "ratio": 3.0, "severity": "critical"},
    ...              {"type": "opened", "episode_id": "e1", "sensor": "a", "window_end_ms": 5},
    ...              {"type": "resolved", "episode_id": "e1", "sensor": "a", "window_end_ms": 9}, {"x": 1}])
    >>> len(d.anomalies), d.episodes[0].start_ms, d.episodes[0].end_ms, d.ignored
    (1, 5, 9, 1)
    """
    sensors: dict[str, SensorSeries] = {}
    episode_docs: dict[str, list[dict[str, Any]]] = {}
    n = ignored = 0
    for doc in docs:
        n += 1
        if not isinstance(doc, dict):  # a number, a list: no event
            ignored += 1
            continue
        kind, sensor, ts = doc.get("type", "anomaly"), doc.get("sensor"), _time_ms(doc, _TIME_KEYS)
        sensor = sensor if isinstance(sensor, str) else None
        scored = _is_number(doc.get("score")) and all(_is_number(doc[k]) for k in ("threshold", "ratio") if k in doc)
        if kind in EPISODE_TYPES and doc.get("episode_id") is not None and sensor is not None:
            episode_docs.setdefault(str(doc["episode_id"]), []).append(doc)
        elif kind == "anomaly" and sensor is not None and ts is not None and scored:
            sensors.setdefault(sensor, SensorSeries(sensor)).anomalies.append(doc)
        elif kind == "score" and sensor is not None and ts is not None and scored:
            series = sensors.setdefault(sensor, SensorSeries(sensor))
            series.scores.append((ts, float(doc["score"]), float(doc.get("threshold", float("nan")))))
        else:
            ignored += 1
    for eid, group in episode_docs.items():
        ep = _episode(eid, group)
        if ep is not None:
            sensors.setdefault(ep.sensor, SensorSeries(ep.sensor)).episodes.append(ep)
        else:
            ignored += len(group)
    for s in sensors.values():
        s.scores.sort()
        s.anomalies.sort(key=lambda a: _time_ms(a, _TIME_KEYS) or 0)
        s.episodes.sort(key=lambda e: e.start_ms)
    return ReportData(dict(sorted(sensors.items())), _top(sensors, top_n), n, ignored)


def _top(sensors: dict[str, SensorSeries], top_n: int) -> list[dict[str, Any]]:
    """The ``top_n`` anomalies by ratio, round-robin over sensors (each sensor's best first), so one loud
    sensor does not fill the chart; sorted by ratio."""
    ranked = [sorted(s.anomalies, key=lambda a: -_ratio(a)) for s in sensors.values() if s.anomalies]
    ranked.sort(key=lambda r: -_ratio(r[0]))
    picked: list[dict[str, Any]] = []
    for depth in range(max((len(r) for r in ranked), default=0)):
        picked += [r[depth] for r in ranked if depth < len(r)][: top_n - len(picked)]
        if len(picked) >= top_n:
            break
    return sorted(picked, key=lambda a: -_ratio(a))


def _time_ms(doc: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for k in keys:
        v = doc.get(k)
        if _is_number(v) and math.isfinite(v):
            return int(v)
    return None


def _is_number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ratio(a: dict[str, Any]) -> float:
    if "ratio" in a:
        return float(a["ratio"])
    t = float(a.get("threshold", 0.0))
    return float(a["score"]) / t if t > 0 else float("inf")


def _episode(eid: str, docs: list[dict[str, Any]]) -> Episode | None:
    times = [t for d in docs for t in (_time_ms(d, _START_KEYS), _time_ms(d, _TIME_KEYS), _time_ms(d, _END_KEYS))
             if t is not None]
    if not times:
        return None
    starts = [t for d in docs if (t := _time_ms(d, _START_KEYS)) is not None]
    resolved = [d for d in docs if d.get("type") == "resolved"]
    end: int | None = None
    if resolved:
        ends = [t for d in resolved for t in (_time_ms(d, _END_KEYS), _time_ms(d, _TIME_KEYS)) if t is not None]
        end = max(ends) if ends else max(times)
    severities = {str(d.get("severity", "warning")) for d in docs}
    severity = "critical" if "critical" in severities else "warning"
    return Episode(eid, str(docs[0]["sensor"]), min(starts) if starts else min(times), end, severity)


# -- drawing --------------------------------------------------------------------------------------------------

def _mpl() -> Any:
    try:
        import matplotlib.dates as mdates
        from matplotlib.figure import Figure
    except ImportError:
        raise AestreamError("aestream report needs matplotlib: pip install 'aestream[report]'") from None
    return Figure, mdates


def _dt(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _x(ms: float) -> float:
    """Event time in ms as a matplotlib date number (the axes are set to dates)."""
    from matplotlib.dates import date2num

    return float(date2num(_dt(ms)))


def _pick_sensors(data: ReportData, max_sensors: int) -> list[SensorSeries]:
    ranked = sorted(data.sensors.values(), key=lambda s: (-len(s.anomalies), -len(s.episodes), s.sensor))
    return sorted(ranked[:max_sensors], key=lambda s: s.sensor)


def _x_range(data: ReportData) -> tuple[int, int] | None:
    ts = [t for s in data.sensors.values() for t, _, _ in s.scores]
    ts += [t for a in data.anomalies if (t := _time_ms(a, _TIME_KEYS)) is not None]
    ts += [t for e in data.episodes for t in (e.start_ms, e.end_ms) if t is not None]
    return (min(ts), max(ts)) if ts else None


def _draw_sensor(ax: Axes, s: SensorSeries, right_ms: int, mdates: Any) -> None:
    ax.xaxis_date(timezone.utc)
    for ep in s.episodes:
        end = ep.end_ms if ep.end_ms is not None else right_ms
        ax.axvspan(_x(ep.start_ms), _x(max(end, ep.start_ms + 1)), color=SEVERITY_COLOURS[ep.severity],
                   alpha=0.12, lw=0)
    if s.scores:
        ax.plot([_x(t) for t, _, _ in s.scores], [v for _, v, _ in s.scores], color="#4e79a7", lw=0.9,
                label="score")
    thr = [(t, th) for t, _, th in s.scores if th == th]  # not NaN
    thr += [(t, float(a["threshold"])) for a in s.anomalies
            if "threshold" in a and (t := _time_ms(a, _TIME_KEYS)) is not None]
    if thr:
        thr.sort()
        ax.step([_x(t) for t, _ in thr], [v for _, v in thr], where="post", color="#555555", ls="--", lw=1,
                label="threshold")
    for sev, colour in SEVERITY_COLOURS.items():
        pts = [(_x(_time_ms(a, _TIME_KEYS) or 0), float(a["score"])) for a in s.anomalies
               if a.get("severity", "warning") == sev]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color=colour, zorder=3, label=sev,
                       marker="^" if sev == "critical" else "o")
    values = [v for _, v, _ in s.scores] + [float(a["score"]) for a in s.anomalies]
    if values and min(values) > 0 and max(values) / min(values) > 50:
        ax.set_yscale("log")
    ax.set_ylabel(s.sensor, rotation=0, ha="right", va="center", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=timezone.utc))


def _draw_timeline(axes: list[Axes], series: list[SensorSeries], data: ReportData, mdates: Any) -> None:
    span = _x_range(data)
    right = span[1] if span else 0
    for ax, s in zip(axes, series):
        _draw_sensor(ax, s, right, mdates)
    if span and span[1] > span[0]:
        axes[0].set_xlim(_x(span[0]), _x(span[1]))
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if any(s.episodes for s in series):
        from matplotlib.patches import Patch

        handles["episode"] = Patch(color=SEVERITY_COLOURS["warning"], alpha=0.25)
    if handles:
        axes[0].legend(handles.values(), handles.keys(), loc="lower left", bbox_to_anchor=(0, 1.02),
                       ncol=len(handles), fontsize=7, frameon=False)
    axes[0].set_title("Score per sensor (UTC) with threshold, anomalies and episodes", fontsize=10, pad=18)


def _channel_colours(top: list[dict[str, Any]]) -> dict[str, Any]:
    from matplotlib import colormaps

    names = sorted({c["name"] for a in top for c in a.get("channels", [])})
    hues = (0, 2, 4, 5, 6, 8, 9, 7)  # tab10's, without red or orange: those mean severity here
    cmap = colormaps["tab20"]  # tab10's colours at even places, a light shade of each after it: 16 in all
    palette = [cmap(2 * h) for h in hues] + [cmap(2 * h + 1) for h in hues]
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


def _draw_contributions(ax: Axes, top: list[dict[str, Any]]) -> None:
    if not top:
        ax.text(0.5, 0.5, "no anomaly events", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    colours = _channel_colours(top)
    labels = [f"{a['sensor']} {_dt(_time_ms(a, _TIME_KEYS) or 0):%m-%d %H:%M:%S} x{_ratio(a):.1f}" for a in top]
    seen: set[str] = set()
    for row, a in enumerate(top):
        left = 0.0
        for c in a.get("channels", []):
            share = float(c["share"])
            label = c["name"] if c["name"] not in seen else None
            seen.add(c["name"])
            ax.barh(row, share, left=left, color=colours[c["name"]], label=label)
            left += share
        if left < 0.999:
            ax.barh(row, 1 - left, left=left, color="#dddddd", label="other" if "other" not in seen else None)
            seen.add("other")
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the window's reconstruction error", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title(f"Channel contributions of the top {len(top)} anomalies (by score/threshold)", fontsize=10)
    ax.legend(loc="lower left", bbox_to_anchor=(1.01, 0), fontsize=7, frameon=False)


def timeline_figure(data: ReportData, max_sensors: int = DEFAULT_MAX_SENSORS) -> Figure:
    """The per-sensor score timeline as a matplotlib figure."""
    figure_cls, mdates = _mpl()
    series = _pick_sensors(data, max_sensors) or [SensorSeries("(no events)")]
    fig = figure_cls(figsize=(11, 1.3 * len(series) + 1.0), layout="constrained")
    axes = list(fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0])
    _draw_timeline(axes, series, data, mdates)
    return fig


def contributions_figure(data: ReportData) -> Figure:
    """The channel contributions of the top anomalies as a matplotlib figure."""
    figure_cls, _ = _mpl()
    fig = figure_cls(figsize=(11, 0.35 * max(len(data.top), 3) + 1.2), layout="constrained")
    _draw_contributions(fig.add_subplot(), data.top)
    return fig


def _png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def render_png(data: ReportData, max_sensors: int = DEFAULT_MAX_SENSORS, dpi: int = 110) -> bytes:
    """Timeline and contributions in one PNG."""
    figure_cls, mdates = _mpl()
    series = _pick_sensors(data, max_sensors) or [SensorSeries("(no events)")]
    n_top = max(len(data.top), 3)
    fig = figure_cls(figsize=(11, 1.3 * len(series) + 0.35 * n_top + 2.4), layout="constrained")
    upper, lower = fig.subfigures(2, 1, height_ratios=[1.3 * len(series) + 1.0, 0.35 * n_top + 1.2])
    axes = list(upper.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0])
    _draw_timeline(axes, series, data, mdates)
    _draw_contributions(lower.add_subplot(), data.top)
    return _png(fig, dpi)


# -- the page -------------------------------------------------------------------------------------------------

def _summary(data: ReportData) -> dict[str, str]:
    anomalies = data.anomalies
    sev = Counter(str(a.get("severity", "?")) for a in anomalies)
    span = _x_range(data)
    return {
        "time range (UTC)": f"{_dt(span[0]):%Y-%m-%d %H:%M:%S} .. {_dt(span[1]):%Y-%m-%d %H:%M:%S}" if span else "-",
        "anomaly events": f"{len(anomalies)} ({', '.join(f'{k} {v}' for k, v in sorted(sev.items())) or 'none'})",
        "sensors with anomalies": str(sum(1 for s in data.sensors.values() if s.anomalies)),
        "episodes": f"{len(data.episodes)} ({sum(e.end_ms is None for e in data.episodes)} still open)",
        "model versions": ", ".join(sorted({str(a.get('model_version', '?')) for a in anomalies})) or "-",
        "documents read": f"{data.n_documents} ({data.ignored} not drawn)",
    }


def _channels_text(a: dict[str, Any]) -> str:
    return ", ".join(f"{c['name']} {float(c['share']):.0%}" for c in a.get("channels", []))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_html(data: ReportData, title: str = "aestream anomaly report",
                max_sensors: int = DEFAULT_MAX_SENSORS) -> str:
    """One self-contained HTML page: summary, timeline, contributions and the top-anomaly table."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(a['sensor']))}</td><td>{e(str(a.get('window_end', _time_ms(a, _TIME_KEYS))))}</td>"
        f"<td>{float(a['score']):.4g}</td><td>{_ratio(a):.2f}</td><td>{e(str(a.get('severity', '')))}</td>"
        f"<td>{e(_channels_text(a))}</td>"
        f"<td>{e(str(a.get('model_version', '')))}</td></tr>" for a in data.top)
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary(data).items())
    shown = len(_pick_sensors(data, max_sensors))
    note = f"<p>Showing the {shown} sensors with the most anomalies of {len(data.sensors)}.</p>" \
        if len(data.sensors) > shown else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}}</style>
</head><body>
<h1>{e(title)}</h1>
<table>{summary}</table>
<h2>Score timeline</h2>{note}
{_img(_png(timeline_figure(data, max_sensors)), "score timeline per sensor")}
<h2>Top anomalies</h2>
{_img(_png(contributions_figure(data)), "channel contributions of the top anomalies")}
<table><tr><th>sensor</th><th>window end</th><th>score</th><th>ratio</th><th>severity</th><th>channels</th>
<th>model</th></tr>{rows}</table>
</body></html>
"""


def write_report(docs: Iterable[dict[str, Any]], out: str | Path, *, png: bool = False, top_n: int = DEFAULT_TOP_N,
                 max_sensors: int = DEFAULT_MAX_SENSORS, title: str = "aestream anomaly report") -> Path:
    """Write the report of ``docs`` to ``out``: HTML, or one PNG when ``png`` (or ``out`` ends in ``.png``)."""
    data = collect(docs, top_n)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if png or path.suffix.lower() == ".png":
        path.write_bytes(render_png(data, max_sensors))
    else:
        path.write_text(render_html(data, title, max_sensors), encoding="utf-8")
    log.info("report of %d anomalies on %d sensors written to %s", len(data.anomalies), len(data.sensors), path)
    return path
