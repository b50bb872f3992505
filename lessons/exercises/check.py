"""Check an exercise against the library:  python -m lessons.exercises.check NN [FILE]

    python -m lessons.exercises.check 01                                   # the blank exercise file
    python -m lessons.exercises.check 01 lessons/exercises/ex01_work.py    # your copy
    python -m lessons.exercises.check 02 lessons/exercises/solutions/ex02_ddpm_step.py

FILE is imported by its path, its functions are run on seeded random inputs and on edge cases, and
every result is compared with the reference implementation in ``toydiff`` (exercises 01-04),
``imagediff`` (05-07; 07 uses both) or ``videodiff`` (08-12).  One line per check says
PASS or FAIL and why; the exit status is 0 only when every check passes (1 otherwise, 2 for a bad
command line).

How the checker is laid out (for whoever adds exercise 13)
    lessons/exercises/exNN_topic.py             the exercise, with blanks
    lessons/exercises/solutions/exNN_topic.py   its reference answer
    lessons/exercises/checks/exNN_topic.py      its checks

This file is the harness: it finds every checks/exNN_*.py by that name (there is no list to edit),
runs its checks one by one and reports them.  A checks module defines
    TOPIC     one line, printed in the header and in --help
    LIBRARY   what the checks compare with, printed in the header
    checks(student) -> [(name, check)]
              each check a function of no arguments that returns None when the student's module
              `student` agrees with the library, or raises CheckFailed (checks/assertions.py) with
              the reason; a NotImplementedError (a blank `todo`) reads "not written yet"
and takes shared seeded inputs from checks/inputs.py.  NN, two digits, is the exercise's number
on the command line.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from .checks.assertions import CheckFailed

USAGE = __doc__[: __doc__.index("How the checker is laid out")].strip()  # what --help prints
HERE = Path(__file__).resolve().parent
CHECKS = HERE / "checks"


# ----------------------------------------------------------------------------------------------
# The registry: one checks module per exercise, found by its name
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    file_name: str  # the exercise file in lessons/exercises/, and its checks module's file in checks/
    topic: str
    checks: Callable[[ModuleType], list[tuple[str, Callable[[], None]]]]
    library: str  # what the checks compare with, for the header line


def discover_exercises() -> dict[str, Exercise]:
    """{"01": Exercise, ...}: one entry per checks/exNN_*.py, by number."""
    exercises: dict[str, Exercise] = {}
    for path in sorted(CHECKS.glob("ex[0-9][0-9]_*.py")):
        module = importlib.import_module(f".checks.{path.stem}", __package__)
        missing = [name for name in ("TOPIC", "LIBRARY", "checks") if not hasattr(module, name)]
        if missing:
            raise ImportError(f"{path} defines no {', '.join(missing)}: a checks module needs TOPIC, LIBRARY "
                              "and checks(student)")
        number = path.stem[2:4]
        if number in exercises:
            raise ImportError(f"two checks modules for exercise {number}: {exercises[number].file_name} "
                              f"and {path.name}")
        exercises[number] = Exercise(path.name, module.TOPIC, module.checks, module.LIBRARY)
    return exercises


EXERCISES = discover_exercises()


# ----------------------------------------------------------------------------------------------
# Running and reporting
# ----------------------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    passed: bool
    reason: str = ""


def _inside_the_checker(filename: str) -> bool:
    path = Path(filename).resolve()
    return path == Path(__file__).resolve() or CHECKS in path.parents


def run_check(name: str, check: Callable[[], None]) -> Result:
    """Run one check; a crash of the student's code is a failure that says where it happened."""
    try:
        check()
    except NotImplementedError as error:
        return Result(name, False, f"not written yet ({error})")
    except CheckFailed as error:
        return Result(name, False, str(error))
    except Exception as error:  # the student's code crashed: show where
        frames = traceback.extract_tb(error.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                      if not _inside_the_checker(f.filename)), "")
        return Result(name, False, f"{type(error).__name__}: {error}" + (f" (at {where})" if where else ""))
    return Result(name, True)


def load_student_file(path: Path, name: str) -> ModuleType:
    """Import a Python file by its path (it need not be inside a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_exercise(number: str, path: Path | None = None, out=sys.stdout) -> int:
    """Run every check of exercise ``number`` on ``path``; print one line each.  Returns the exit status."""
    exercise = EXERCISES[number]
    path = Path(path) if path is not None else HERE / exercise.file_name
    print(f"Exercise {number} — {exercise.topic}\nchecking {path} against {exercise.library}\n", file=out)
    if not path.is_file():
        print(f"FAIL  no such file: {path}", file=out)
        return 1
    try:
        student = load_student_file(path, f"student_exercise_{number}")
    except Exception as error:
        print(f"FAIL  could not import {path}: {type(error).__name__}: {error}", file=out)
        return 1
    results = [run_check(name, check) for name, check in exercise.checks(student)]
    for result in results:
        print(f"PASS  {result.name}" if result.passed else f"FAIL  {result.name}\n      {result.reason}", file=out)
    passed = sum(result.passed for result in results)
    verdict = "all checks pass" if passed == len(results) else "keep going"
    print(f"\n{passed}/{len(results)} checks passed: {verdict}", file=out)
    return 0 if passed == len(results) else 1


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------

def normalise_number(text: str) -> str:
    """"1", "01", "ex01" -> "01"; a ValueError naming the known exercises otherwise."""
    digits = text.lower().removeprefix("ex")
    if not digits.isdigit() or f"{int(digits):02d}" not in EXERCISES:
        raise ValueError(f"unknown exercise {text!r}; expected one of {', '.join(EXERCISES)}")
    return f"{int(digits):02d}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) > 2 or argv[0] in ("-h", "--help"):
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(USAGE, file=sys.stdout if asked else sys.stderr)
        print("\nexercises:\n" + "\n".join(f"  {n}  {e.topic}  ({e.file_name})" for n, e in EXERCISES.items()),
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    try:
        number = normalise_number(argv[0])
    except ValueError as error:
        print(f"check: error: {error}", file=sys.stderr)
        return 2
    return check_exercise(number, Path(argv[1]) if len(argv) > 1 and argv[1] else None)


if __name__ == "__main__":
    sys.exit(main())
