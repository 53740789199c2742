"""Self-checks for the lessons' exercises: one module per notebook (`lesson00` ... `lesson10`).

A check looks at the real state of the lab (ClickHouse rows, the slot, the topic), not only at
the value a learner typed. It prints one line starting with ✓ when the exercise is solved, and
raises `CheckFailed` (what is wrong, and what to try) otherwise. See
cdc_kit/lesson_solutions/README.md.
"""

from cdc_kit.checks.common import CheckFailed, passed

__all__ = ["CheckFailed", "passed"]
