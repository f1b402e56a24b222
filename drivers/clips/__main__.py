"""The voice clips from the command line.

    python -m drivers.clips --write     # make drivers/clips/*.wav from the table (espeak-ng, sox)
    python -m drivers.clips --check     # do the checked-in clips match the table?
    python -m drivers.clips --list      # each clip's name, length and text
    python -m drivers.clips --play prompt [--device plughw:1,0] [--volume 80] [--clips-dir D]
                                        # play clips through ALSA, as the device would
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drivers.clips import CLIPS, load_clips, manifest_problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.clips", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="make the built-in clips again")
    mode.add_argument("--check", action="store_true", help="check them against the table")
    mode.add_argument("--list", action="store_true", help="list the clips")
    mode.add_argument("--play", nargs="+", metavar="CLIP", choices=list(CLIPS),
                      help="play these clips one after another")
    parser.add_argument("--device", default="default", help="ALSA device (aplay -L)")
    parser.add_argument("--volume", type=int, default=80, choices=range(0, 101),
                        metavar="0..100")
    parser.add_argument("--clips-dir", type=Path, help="a hall's own recordings")
    args = parser.parse_args(argv)

    if args.write:
        from drivers.clips.make import MakeError, write_clips
        try:
            for name in write_clips():
                print(f"{name}: {CLIPS[name]}")
        except MakeError as e:
            print(f"cannot make the clips: {e}", file=sys.stderr)
            return 1
        return 0
    if args.check:
        problems = manifest_problems()
        for p in problems:
            print(p, file=sys.stderr)
        if not problems:
            print(f"{len(CLIPS)} clips match the table")
        return 1 if problems else 0
    clips = load_clips(args.clips_dir, warn=lambda m: print(m, file=sys.stderr))
    if args.list:
        for name, clip in clips.items():
            print(f"{name:8} {clip.duration_s:5.2f} s  {CLIPS[name]}  ({clip.source})")
        return 0
    from drivers.voice import play_and_wait
    error = play_and_wait(clips, args.play, args.device, args.volume)
    if error:
        print(f"could not play: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
