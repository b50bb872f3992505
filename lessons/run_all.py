"""Run the lessons in order and print how long each took next to the time its header states.

    python lessons/run_all.py                 # every lesson, full mode (what `make lessons` runs)
    python lessons/run_all.py 05 06           # some of them
    LESSON_QUICK=1 python lessons/run_all.py  # quick mode (`make lessons-quick`)

Each lesson states its full-mode run time on a 2-core CPU in a header line of the form

    # Time:  about 4 min on a 2-core CPU ...

and that time is what a student can expect *once the checkpoints it reuses from earlier lessons exist*:
running the lessons in order gives exactly that situation, since every lesson trains the shared
checkpoints it needs the first time (lesson 02 the spiral model, 05 the VAE and the grader, 06 the
latent DiT, 07 the noisy-latent classifier).  The table says which checkpoints each lesson trained, so a
second run (all checkpoints present) is told apart from a first one.  Quick-mode times are not compared
with the headers: quick mode only proves that a lesson runs.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from lesson_setup import QUICK, ROOT  # sibling module: this script runs from lessons/

LESSONS = Path(__file__).resolve().parent
HEADER_TIME = re.compile(r"^# Time:\s+about ([0-9.]+) (s|min)\b", re.MULTILINE)
LIMIT_SECONDS = 600.0  # every lesson promises at most 10 minutes in full mode on 2 cores


def stated_seconds(lesson: Path) -> float:
    """The run time a lesson's header states, in seconds (``# Time:  about N min``)."""
    match = HEADER_TIME.search(lesson.read_text())
    if match is None:
        raise ValueError(f"{lesson.name}: no header line '# Time:  about N s|min ...' stating its run time")
    value, unit = float(match.group(1)), match.group(2)
    return value * 60 if unit == "min" else value


def checkpoints(root: Path) -> set[Path]:
    """Every checkpoint the lessons have written under ``root``."""
    return set(root.rglob("*.pt")) if root.exists() else set()


def main(argv: list[str]) -> int:
    lessons = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
    if argv:
        unknown = [a for a in argv if not any(p.name.startswith(a) for p in lessons)]
        if unknown:
            print(f"unknown lesson(s) {', '.join(unknown)}: expected numbers such as 01 or 05", file=sys.stderr)
            return 2
        lessons = [p for p in lessons if any(p.name.startswith(a) for a in argv)]
    try:
        stated = {lesson: stated_seconds(lesson) for lesson in lessons}  # a bad header fails before any run
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    rows, code = [], 0
    for lesson in lessons:
        print(f"== {lesson.name}{' (quick)' if QUICK else ''}", flush=True)
        before = checkpoints(ROOT)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(lesson)])
        seconds = time.perf_counter() - started
        trained = sorted(str(p.relative_to(ROOT)) for p in checkpoints(ROOT) - before)
        rows.append((lesson.stem, seconds, stated[lesson], trained))
        if code != 0:
            print(f"{lesson.name} failed with exit status {code}", file=sys.stderr)
            break
    cores = os.cpu_count()
    print(f"\nlesson run times on this machine ({cores} cores{', quick mode' if QUICK else ''}):")
    print(f"{'lesson':34s} {'measured':>9s} {'header':>9s}  checkpoints it trained")
    over = []
    for name, seconds, header_seconds, trained in rows:
        flag = ""
        if not QUICK and seconds > LIMIT_SECONDS:
            flag, over = "  OVER 10 MIN", over + [name]
        print(f"{name:34s} {seconds:7.1f} s {header_seconds:7.0f} s  {', '.join(trained) or '-'}{flag}")
    if over:
        print(f"over the {LIMIT_SECONDS / 60:.0f}-minute limit of a lesson: {', '.join(over)}", file=sys.stderr)
    return 0 if len(rows) == len(lessons) and code == 0 and not over else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
