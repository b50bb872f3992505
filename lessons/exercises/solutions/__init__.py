"""Reference answers to the exercises (try the exercise first)."""
