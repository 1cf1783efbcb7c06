"""Times of day written as "HH:MM": the one parser for schedules and work hours.

Pure Python, no Django: the protection scheduler, the wizard's schedule fields and
recovery's bandwidth throttle all read the same format through this function.
"""

from __future__ import annotations

import re
from datetime import time

# One or two hour digits, exactly two minute digits; ASCII only (str.isdigit and \d
# would also accept other scripts' digits).
_TIME_OF_DAY = re.compile(r"([0-9]{1,2}):([0-9]{2})", re.ASCII)


def parse_time_of_day(text: str) -> time:
    """'08:05', '8:05' and ' 20:00 ' -> a time; anything else raises ValueError.

    Refused: 24:00 and 23:60 (not a time of day), 7:5 (7:05 or 7:50?), seconds,
    time zones, and anything that is not ASCII digits around one colon.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time of day: use HH:MM, for example 21:00")
    match = _TIME_OF_DAY.fullmatch(text.strip())
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"{text.strip()!r} is not a time of day: use HH:MM, for example 21:00")
    return time(int(match.group(1)), int(match.group(2)))


def format_time_of_day(value: time) -> str:
    """The canonical "HH:MM" form that schedules store."""
    return value.strftime("%H:%M")
