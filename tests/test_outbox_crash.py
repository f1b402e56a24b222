"""A process storing ratings is SIGKILLed at random instants, again and again: every rating
it reported as stored is still there after a restart (unless it was being removed), every
removal it reported as done stays done, no rating appears twice, and seq numbers are never
reused across restarts. (SIGKILL keeps the page cache, so this checks that acknowledging
comes after a whole record is written and that no instant of a store or a compaction leaves
an unreadable outbox; torn writes of a power cut are covered by test_journal.py and
test_outbox_corruption.py.)"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from device.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]
KILLS = 32

# Stores in a loop and says so only after store() returned; acknowledges (removes) the oldest
# few now and then, like receipts; a small compaction threshold makes kills land in
# compactions too.
CHILD = """
import sys
from pathlib import Path
from device.outbox import Outbox
from tests.test_outbox_support import make_rating

outbox = Outbox(Path(sys.argv[1]), compact_min_bytes=32 * 1024)
outbox.open()
print("open", flush=True)
seq = outbox.next_seq()
while True:
    rating = make_rating(seq)
    outbox.store(rating, case_id=f"CASE-{seq}", case_rated_at=float(seq))
    print("stored", rating["rating_id"], seq, flush=True)
    seq += 1
    if seq % 5 == 0:
        ids = outbox.pending_ids()[:4]
        print("removing", *ids, flush=True)
        outbox.remove(ids)
        print("removed", flush=True)
"""


def test_sigkill_at_random_instants_never_loses_an_acknowledged_rating(tmp_path: Path) -> None:
    rng = random.Random(7)
    stored: dict[str, int] = {}
    removing: set[str] = set()   # a removal was started: these may be gone
    removed: set[str] = set()    # a removal returned: these must be gone
    seqs: list[int] = []
    batch: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for kill in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 bufsize=0)  # no read-ahead past "open" for communicate()
        assert child.stdout is not None
        assert child.stdout.readline() == b"open\n", child.stderr.read() if child.stderr else ""
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL, err.decode()

        for line in out.decode().splitlines(keepends=True):
            if not line.endswith("\n"):
                continue                     # killed while printing: not acknowledged
            word, *rest = line.split()
            if word == "stored":
                stored[rest[0]] = int(rest[1])
                seqs.append(int(rest[1]))
            elif word == "removing":
                batch = set(rest)
                removing |= batch
            else:
                removed |= batch

        box = Outbox(tmp_path)
        report = box.open()
        pending = box.pending_ids()
        assert len(pending) == len(set(pending)), f"kill {kill}: a rating appears twice"
        missing = set(stored) - removing - set(pending)
        assert not missing, f"kill {kill}: acknowledged ratings lost: {missing} ({report})"
        assert not removed & set(pending), f"kill {kill}: acknowledged receipts undone"
        assert box.next_seq() > max(seqs, default=0)
        assert [r["seq"] for r in box.pending()] == sorted(r["seq"] for r in box.pending())
        box.close()

    assert seqs == sorted(set(seqs)), "a seq was reused after a restart"
    assert len(stored) > KILLS          # the children did real work between kills
    assert removed                      # and receipts were recorded
