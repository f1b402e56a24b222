"""`hcp-platform followups --store URL [list [--json] | set RATING_ID STATE --note TEXT
--by WHO [--device DEVICE_ID]]`: the follow-ups of bad ratings (差评整改), read and moved
along from a shell. A rating is the pair (rating_id, device_id): when a rating_id names
two devices' follow-ups, `set` refuses until --device says which."""

from __future__ import annotations

import argparse
import json
import sys

from city_platform.followups import STATE_LABELS, STATES, FollowupError
from city_platform.store import Store, StoreError
from common.service import EX_CANTCREAT
from common.text import display_text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hcp-platform followups",
        description="Follow-ups of bad ratings (差评整改, 3、5、15 working days).")
    parser.add_argument("--store", required=True, metavar="URL",
                        help="sqlite:////path/ratings.db or postgresql://user@host/db")
    sub = parser.add_subparsers(dest="command")
    listing = sub.add_parser("list", help="one line per follow-up (default)")
    listing.add_argument("--json", action="store_true",
                         help="one JSON object per line (SPEC §11 fields)")
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--hall")
    move = sub.add_parser("set", help="move one follow-up to a new state")
    move.add_argument("rating_id")
    move.add_argument("state", choices=STATES)
    move.add_argument("--note", help="what was done (closing needs one); no personal data")
    move.add_argument("--by", required=True, help="who acts (name or staff number)")
    move.add_argument("--device", metavar="DEVICE_ID",
                      help="the rating's device; needed when two devices' ratings share "
                           "the rating_id (list --json shows device_id)")
    move.add_argument("--complex", action="store_true",
                      help="mark the case complex: rectify within 15 working days")
    args = parser.parse_args(argv)
    try:
        store = Store.open(args.store)
    except StoreError as e:
        print(f"hcp-platform followups: {e}", file=sys.stderr)
        return EX_CANTCREAT
    try:
        if args.command == "set":
            try:
                moved = store.move_followup(args.rating_id, args.state, args.note, args.by,
                                            True if args.complex else None,
                                            device_id=args.device)
            except FollowupError as e:
                print(f"hcp-platform followups set: {e}", file=sys.stderr)
                return 1
            print(json.dumps(moved.as_json(), ensure_ascii=False))
            return 0
        rows = store.followups(state=getattr(args, "state", None),
                               hall_id=getattr(args, "hall", None))
        if getattr(args, "json", False):
            for f in rows:
                print(json.dumps(f.as_json(), ensure_ascii=False))
            return 0
        print(f"{'rating_id':<32}  {'window':<14} lvl {'state':<9} {'contact':<10} "
              f"{'rectify':<10} {'complex':<10} case")
        for f in rows:
            due = [d.isoformat() if d else "?" for d in (f.contact_due, f.rectify_due,
                                                          f.complex_due)]
            # Ids from devices go to a terminal as text (common.text): no escape
            # sequence, no line break that would forge a line of the list.
            case = (display_text(f.case_id) if f.case_id is not None
                    else "（主动评价，无办件）")
            window = display_text(f.hall_id + "-" + f.window_id)
            print(f"{display_text(f.rating_id):<32}  {window:<14} {f.level:>3} "
                  f"{STATE_LABELS[f.state]:<6} {due[0]:<10} {due[1]:<10} {due[2]:<10} {case}"
                  + (f"  ⚠ {f.deadline_error}" if f.deadline_error else ""))
        return 0
    except StoreError as e:
        print(f"hcp-platform followups: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
