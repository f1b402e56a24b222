"""The hall's follow-up deadline checks survive a failure nobody foresaw: it is logged
with its traceback and the next check runs (it used to end the thread for good, and with
it every deadline's move to overdue)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from city_platform.config import PlatformConfig
from city_platform.hall import Hall
from city_platform.store import Store


def test_an_unforeseen_failure_does_not_end_the_deadline_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ratings.db'}")
    hall = Hall(store, replace(PlatformConfig(), check_s=0.02))
    calls: list[float] = []
    real = store.refresh_deadlines

    def refresh() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise AttributeError("an unforeseen failure")
        real()

    monkeypatch.setattr(store, "refresh_deadlines", refresh)
    loop = threading.Thread(target=hall._loop, daemon=True)
    try:
        with caplog.at_level(logging.ERROR):
            loop.start()
            deadline = time.monotonic() + 10
            while len(calls) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert len(calls) >= 4 and loop.is_alive()
        assert caplog.text.count("follow-up check failed unexpectedly") == 2
        assert "AttributeError: an unforeseen failure" in caplog.text
    finally:
        hall.stop()
        loop.join(5)
        store.close()
    assert not loop.is_alive()
