"""The checks of each exercise, one module per exercise, named like the exercise file it checks.

    checks/exNN_topic.py   TOPIC, LIBRARY and checks(student) for lessons/exercises/exNN_topic.py
    checks/assertions.py   CheckFailed and the comparisons every check uses
    checks/inputs.py       seeded inputs that several exercises share

lessons/exercises/check.py finds the exNN_*.py modules by their name; see its header.
"""
