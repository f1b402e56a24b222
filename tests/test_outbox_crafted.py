"""A journal whose records pass their checksum but hold what the device never writes (only
a crafted or foreign file can): it still opens, the odd record is reported as damage or
its odd entry is ignored, and every rating is still there. Never a crash at open, which
would be a crash loop of the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device.journal import frame, put_op, scan
from device.journal_records import dumps
from device.outbox import CASES, JOURNAL_NAME, Outbox
from tests.test_outbox_support import make_rating


def test_a_record_nested_too_deeply_is_damage_not_a_crash() -> None:
    good = frame(dumps({"ops": [put_op("t", "a", {})]}))
    deep = frame(b'{"ops":[["put","t","b",' + b'{"x":' * 100_000 + b"1" + b"}" * 100_000
                 + b"]]}")
    records, damage = scan(deep + good)
    assert [r["ops"][0][2] for r in records] == ["a"]
    assert [(d.start, d.end, d.reason) for d in damage] == [
        (0, len(deep), "bad JSON (nested too deeply)")]


@pytest.mark.parametrize("rated_at", [None, "yesterday", True, [1], {"t": 1},
                                      10 ** 400, float("inf"), "missing"])
def test_a_remembered_case_without_a_usable_time_is_left_out(tmp_path: Path,
                                                             rated_at: Any) -> None:
    box = Outbox(tmp_path)
    box.open()
    box.store(make_rating(1), case_id="CASE-GOOD", case_rated_at=1e9)
    box.store(make_rating(2), case_id="CASE-ODD", case_rated_at=1e9 + 1)
    box.close()
    odd: dict[str, Any] = {"rating_id": make_rating(2)["rating_id"], "level": 4}
    if rated_at != "missing":
        odd["rated_at"] = rated_at
    with (tmp_path / JOURNAL_NAME).open("ab") as f:
        f.write(frame(dumps({"ops": [put_op(CASES, "CASE-ODD", odd)]})))
    box = Outbox(tmp_path)
    box.open()
    assert box.recent_cases() == {"CASE-GOOD": 1e9}
    assert [c for c, _, _ in box.unannounced_cases()] == ["CASE-ODD", "CASE-GOOD"]
    box.forget_cases_before(1e9 - 10)
    assert box.recent_cases() == {"CASE-GOOD": 1e9}
    assert len(box) == 2
    box.close()
