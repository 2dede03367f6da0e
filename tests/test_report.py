"""aestream report: a self-contained HTML (or PNG) from a small synthetic events file."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from aestream.commands.report import collect, read_events, write_report
from aestream.errors import AestreamError

pytest.importorskip("matplotlib")

T0 = 1_767_225_600_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _anomaly(sensor: str, i: int, ratio: float, severity: str = "warning") -> dict[str, Any]:
    return {"schema": "aestream.event/1", "type": "anomaly", "event_id": f"{sensor}-{i}", "sensor": sensor,
            "window_start_ms": T0 + (i - 15) * 1000, "window_end_ms": T0 + i * 1000,
            "window_end": f"2026-01-01T00:00:{i:02d}.000Z", "score": 2.0 * ratio, "threshold": 2.0, "ratio": ratio,
            "severity": severity, "channels": [{"name": "pressure", "share": 0.6}, {"name": "current", "share": 0.3}],
            "model_version": "v0001", "model_family": "vanilla",
            "source": {"topic": "readings", "partition": 0, "offset": i}}


def _docs() -> list[dict[str, Any]]:
    docs = [_anomaly("pump-1", i, 5.0 + i, "critical") for i in range(20, 26)]
    docs += [_anomaly("pump-2", 40, 1.2), _anomaly("pump-2", 44, 1.4)]
    docs += [{"type": "opened", "episode_id": "ep-1", "sensor": "pump-1", "window_end_ms": T0 + 20_000,
              "severity": "critical"},
             {"type": "updated", "episode_id": "ep-1", "sensor": "pump-1", "window_end_ms": T0 + 23_000},
             {"type": "resolved", "episode_id": "ep-1", "sensor": "pump-1", "window_end_ms": T0 + 30_000},
             {"type": "opened", "episode_id": "ep-2", "sensor": "pump-2", "window_end_ms": T0 + 40_000}]
    docs += [{"type": "score", "sensor": "pump-3", "window_end_ms": T0 + i * 1000, "score": 1.0, "threshold": 2.0}
             for i in range(0, 60, 4)]
    return docs


def _events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in _docs()) + "\n")
    return path


def test_the_html_report_is_one_file_with_embedded_pngs_and_the_top_anomalies(tmp_path: Path) -> None:
    out = write_report(read_events(_events_file(tmp_path)), tmp_path / "r" / "report.html")
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "<script" not in page and 'src="http' not in page  # self-contained
    assert "anomaly events</th><td>8 (critical 6, warning 2)" in page
    assert "2 (1 still open)" in page
    assert "<td>pump-1</td><td>2026-01-01T00:00:25.000Z</td><td>60</td><td>30.00</td><td>critical</td>" in page
    assert "pressure 60%, current 30%" in page


def test_png_option_writes_one_png(tmp_path: Path) -> None:
    out = write_report(_docs(), tmp_path / "report.out", png=True)
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_an_empty_input_still_gives_a_report(tmp_path: Path) -> None:
    page = write_report([], tmp_path / "empty.html").read_text()
    assert "anomaly events</th><td>0 (none)" in page and "data:image/png;base64," in page


def test_collect_sorts_documents_into_anomalies_episodes_and_scores() -> None:
    data = collect([*_docs(), {"type": "something else"}], top_n=3)
    assert sorted(data.sensors) == ["pump-1", "pump-2", "pump-3"]
    assert len(data.anomalies) == 8 and data.ignored == 1 and len(data.sensors["pump-3"].scores) == 15
    ep1, ep2 = data.sensors["pump-1"].episodes[0], data.sensors["pump-2"].episodes[0]
    assert (ep1.start_ms, ep1.end_ms, ep1.severity) == (T0 + 20_000, T0 + 30_000, "critical")
    assert (ep2.start_ms, ep2.end_ms) == (T0 + 40_000, None)
    # each sensor's best first, so a loud sensor does not fill the chart
    assert [(a["sensor"], a["ratio"]) for a in data.top] == [("pump-1", 30.0), ("pump-1", 29.0), ("pump-2", 1.4)]


def test_a_bad_events_file_says_which_line_and_what_to_do(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "anomaly"}\nnot json\n')
    with pytest.raises(AestreamError, match=r"bad.jsonl line 2 is not JSON .*: write one event per line"):
        read_events(bad)
    with pytest.raises(AestreamError, match=r"not found: pass --events with a JSON-lines file"):
        read_events(tmp_path / "missing.jsonl")


def test_a_json_array_file_works_too(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(json.dumps(_docs()))
    assert len(read_events(path)) == len(_docs())


def test_a_truncated_array_or_a_directory_is_one_line_and_exit_2(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from aestream.commands.cli import main

    cut = tmp_path / "cut.json"
    cut.write_text('[{"type": "anomaly"')
    for path, message in ((cut, "cut.json is not a JSON array"), (tmp_path, "cannot be read (Is a directory)")):
        assert main(["report", "--events", str(path), "--out", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aestream: error: events file ") and message in err and "Traceback" not in err, err


def test_documents_that_are_no_events_are_counted_not_drawn_and_the_report_is_written(tmp_path: Path) -> None:
    odd = [1, [1, 2], "x", {**_anomaly("pump-9", 3, 2.0), "score": "high"}, {**_anomaly("pump-9", 4, 2.0),
                                                                         "sensor": ["a"]},
           {**_anomaly("pump-9", 5, 2.0), "ratio": None}, {"type": "score", "sensor": "p", "window_end_ms": 1,
                                                          "score": 1.0, "threshold": "2"}]
    data = collect([*_docs(), *odd])
    assert data.ignored == len(odd) and "pump-9" not in data.sensors
    out = write_report([*_docs(), *odd], tmp_path / "r.html")
    assert f"({len(odd)} not drawn)" in out.read_text()


def test_png_without_out_writes_report_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aestream.commands.cli import main

    events = _events_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(Path(__file__).resolve().parents[1] / "config.toml"), "report", "--events",
                 str(events), "--png"]) == 0
    assert (tmp_path / "report.png").read_bytes().startswith(PNG_MAGIC) and not (tmp_path / "report.html").exists()


def test_up_to_16_channels_each_get_a_colour_of_their_own_and_none_is_a_severity_s() -> None:
    from aestream.commands.report import SEVERITY_COLOURS, _channel_colours

    top = [{"channels": [{"name": f"ch{i:02d}", "share": 0.5}]} for i in range(16)]
    colours = _channel_colours(top)
    assert len(set(colours.values())) == 16
    assert _channel_colours(top[:8]) == {n: colours[n] for n in list(colours)[:8]}, "the first 8 as before"
    from matplotlib.colors import to_rgba

    assert not {to_rgba(c) for c in SEVERITY_COLOURS.values()} & set(colours.values())
