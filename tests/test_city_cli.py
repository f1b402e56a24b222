"""`hcp-platform` as a command: --version, a bad config is one line per problem and exit
78, an unreadable store is exit 73, and `run` stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.bridge import REPO
from tests.support.mosquitto import free_port

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def platform(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city_platform", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)


def test_version_and_usage() -> None:
    done = platform("--version")
    assert done.returncode == 0 and done.stdout.startswith("hcp-platform ")
    bare = platform()
    assert bare.returncode != 0 and "followups" in bare.stderr


def test_a_bad_config_is_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "platform.toml"
    config.write_text('[store]\nurl = "mysql://x"\ntimezone = "Mars/Olympus"\n'
                      '[http]\nlisten = "nowhere"\n[followups]\ncontact_dayz = 3\n'
                      '[calendar]\nextra_years = [2027]\nholidays = ["2027-13-01"]\n',
                      encoding="utf-8")
    done = platform("run", "--config", str(config))
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert any("[store] url" in line for line in lines)
    assert any("[store] timezone" in line for line in lines)
    assert any("[http] listen" in line for line in lines)
    assert any("contact_dayz: unknown key" in line for line in lines)
    assert "Traceback" not in done.stderr


def test_a_store_that_cannot_be_created_is_exit_73(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = tmp_path / "platform.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{blocker}/sub/ratings.db"\n'
                      f'[http]\nlisten = "127.0.0.1:{free_port()}"\n', encoding="utf-8")
    done = platform("run", "--config", str(config))
    assert done.returncode == 73 and "[store] url" in done.stderr


def test_run_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "platform.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "r.db"}"\n'
                      f'[http]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "city_platform", "run", "--config",
                                str(config)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    assert "好差评实时看板" in r.read().decode("utf-8")
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_the_example_config_loads() -> None:
    from city_platform.config import load

    config = load(str(REPO / "city_platform" / "platform.example.toml"))
    assert config.store_url.startswith("sqlite:////") and config.policy.complex_days == 15


def test_another_time_zone_than_the_stores_is_a_config_error(tmp_path: Path) -> None:
    from city_platform.store import Store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    Store.open(url, "Asia/Shanghai").close()
    config = tmp_path / "platform.toml"
    config.write_text(f'[store]\nurl = "{url}"\ntimezone = "Asia/Urumqi"\n'
                      f'[http]\nlisten = "127.0.0.1:{free_port()}"\n', encoding="utf-8")
    done = platform("run", "--config", str(config))
    assert done.returncode == 78
    assert "[store] timezone" in done.stderr and "Asia/Shanghai" in done.stderr
