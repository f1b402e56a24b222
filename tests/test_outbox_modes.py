"""Who may read the outbox (issue 17): `outbox.journal` and every file next to it hold every
rating and the clerks' names, so they are the owner's alone (0600) whatever the umask, and a
file left wider by an older version is narrowed when the outbox opens. Real files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.journal import JournalStorage
from device.journal_files import FILE_MODE
from device.outbox import JOURNAL_NAME, Outbox
from tests.test_outbox_support import make_rating


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The widest umask: whatever the files get is what the code asked for."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_new_outbox_is_private_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    box = Outbox(data)
    box.open()
    box.store(make_rating(1))
    box.put_setting("remote_config", {"thanks_s": 2})
    box.reserve_frame_seqs(1000)
    box.close()
    assert FILE_MODE == 0o600
    assert mode(data / JOURNAL_NAME) == 0o600
    assert mode(data) == 0o750
    # Settings, reservations and the lock live in the journal or on the directory:
    # nothing else is written there.
    assert sorted(p.name for p in data.iterdir()) == [JOURNAL_NAME]


def test_a_journal_left_world_readable_is_narrowed_on_open(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    box.store(make_rating(1))
    box.close()
    journal = tmp_path / JOURNAL_NAME
    journal.chmod(0o644)                  # as every version before this one created it
    leftover = tmp_path / f"{JOURNAL_NAME}.corrupt-20261125T000000Z"
    leftover.write_bytes(b"old damaged copy")
    leftover.chmod(0o664)
    other = tmp_path / "notes.txt"        # not the outbox's: left alone
    other.write_text("x")
    other.chmod(0o644)
    box = Outbox(tmp_path)
    report = box.open()
    try:
        assert mode(journal) == 0o600 and mode(leftover) == 0o600 and mode(other) == 0o644
        assert f"{JOURNAL_NAME}: mode 0644 narrowed to 0600" in report.details
        assert len(box) == 1
    finally:
        box.close()
    report = Outbox(tmp_path).open()
    assert not any("narrowed" in line for line in report.details)  # once is enough


def test_a_compaction_keeps_the_journal_private(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.open()
    box.store(make_rating(1))
    box.close()
    journal = JournalStorage(tmp_path / JOURNAL_NAME)
    try:
        leftover = tmp_path / f"{JOURNAL_NAME}.tmp"   # a name the compaction writes to
        leftover.touch(0o666)
        journal.compact()
    finally:
        journal.close()
    assert not leftover.exists()
    assert mode(tmp_path / JOURNAL_NAME) == 0o600


@pytest.mark.parametrize("hard_links", [True, False])
def test_the_copy_of_a_damaged_journal_is_private(tmp_path: Path, hard_links: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    box = Outbox(tmp_path)
    box.open()
    box.store(make_rating(1))
    box.store(make_rating(2))
    box.close()
    journal = tmp_path / JOURNAL_NAME
    journal.write_bytes(journal.read_bytes()[:-20])   # a torn last record
    journal.chmod(0o644)
    if not hard_links:
        def no_link(*_args: object, **_kwargs: object) -> None:
            raise OSError(1, "hard links not supported here")
        monkeypatch.setattr(os, "link", no_link)
    box = Outbox(tmp_path)
    report = box.open()
    box.close()
    (aside,) = report.moved_aside
    assert aside.name.startswith(f"{JOURNAL_NAME}.corrupt-")
    assert mode(aside) == 0o600 and mode(journal) == 0o600
