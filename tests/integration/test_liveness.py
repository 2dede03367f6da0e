"""/healthz of a real worker whose consume loop stalls: 503 once no step completed within ops.liveness_timeout_s,
200 again when the loop moves on. (Opens the ops endpoint on 127.0.0.1; no broker.)"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from aestream.app import build_app
from aestream.config import Config
from aestream.stream.messages import Partition, Record

pytestmark = pytest.mark.integration

CHANNELS = ("temperature", "pressure", "vibration", "current")


class StallingSource:
    """Empty polls; while ``stalled`` is set, a poll hangs (as a consumer stuck in a broker call does)."""

    def __init__(self) -> None:
        self.stalled, self.release = threading.Event(), threading.Event()

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        if self.stalled.is_set():
            self.release.wait(60)
        time.sleep(0.02)
        return []

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        return True

    def close(self) -> None: ...

    def lag(self) -> dict[Partition, int]:
        return {}

    def assignment(self) -> set[Partition]:
        return set()


def _healthz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def _until(url: str, status: int, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        got, body = _healthz(url)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"/healthz stayed {got} {body}"
        time.sleep(0.05)


def test_healthz_fails_while_the_loop_is_stalled_and_recovers_after(
        train_small: Any, one_model: Any, recording_sink: Any) -> None:
    cfg = Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 4},
                           ops={"metrics_port": 0, "metrics_host": "127.0.0.1", "liveness_timeout_s": 0.5})
    source = StallingSource()
    app = build_app(cfg, source=source, sink=recording_sink(), models=one_model(train_small(cfg)))
    assert app.ops is not None
    t = threading.Thread(target=app.run, daemon=True)
    t.start()
    try:
        _until(app.ops.url, 200)
        source.stalled.set()
        body = _until(app.ops.url, 503)  # used to stay 200: it only proved the HTTP thread was alive
        assert body["status"] == "stalled" and body["seconds_since_step"] > 0.5 and body["timeout_s"] == 0.5
        source.stalled.clear()
        source.release.set()
        assert _until(app.ops.url, 200)["status"] == "ok"
    finally:
        source.stalled.clear()
        source.release.set()
        app.stop()
        t.join(30)
    assert not t.is_alive()
