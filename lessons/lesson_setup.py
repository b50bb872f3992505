"""What every lesson sets up first: quick mode, where its figures go, and one CPU thread.

Lessons import it as a sibling module (``from lesson_setup import ...``): running
``python lessons/NN_name.py`` puts the lessons folder on the import path.
"""
import os
from pathlib import Path

import torch

QUICK = os.environ.get("LESSON_QUICK") == "1"  # a smoke run (CI): a few hundred training steps, fewer points
ROOT = Path(os.environ.get("LESSON_OUTPUT_DIR", "runs")) / ("lessons_quick" if QUICK else "lessons")
SPIRAL = ROOT / "spiral"  # the one checkpoint lessons 02-04 share


def start_lesson(name: str) -> Path:
    """Use one thread, and return the lesson's output folder (created by the first figure saved)."""
    # The networks of these lessons are small: a second thread gains little and, on a busy CPU, makes
    # every step wait for it.
    torch.set_num_threads(1)
    return ROOT / name
