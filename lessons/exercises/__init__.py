"""Exercises for the lessons: a file with blanks per lesson, a checker, and reference answers.

    python -m lessons.exercises.check 01 [FILE]      # or: make check EX=01 FILE=...

See lessons/README.md for the list.
"""
