"""Waiting on processes in tests that kill a bench and watch what it started."""

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], seconds: float, interval: float = 0.1) -> T:
    """`condition()`'s first truthy value within `seconds`, else its last value."""
    deadline = time.monotonic() + seconds
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value
