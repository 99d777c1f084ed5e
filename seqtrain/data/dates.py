"""Date normalisation pairs, generated on the fly: a date as people write it in, ISO `YYYY-MM-DD` out.

    "3rd of March, 1999" -> "1999-03-03"      "wed 3 mar 1999" -> "1999-03-03"      "03/03/99" -> "1999-03-03"

A classic attention task: each output digit comes from one place in the input, and where depends on
the format, so the alignment is visible in an attention heat map. No download, and exact match is a
clear measure of success.

How it is generated:
- Days run from 1950-01-01 to 2049-12-31 (36,524 days), so a two-digit year is never ambiguous:
  50-99 mean 19xx and 00-49 mean 20xx.
- Each numeric format keeps one convention: slashes are US month/day/year, dots and the European
  forms are day.month.year, dashes with a four-digit year first are year-month-day.
- Every calendar day belongs to exactly one split: a shuffle seeded by `seed` gives 10% of the days to
  test, 5% to valid and the rest to train, so held-out examples are dates never seen in training, in
  any format (disjoint targets, hence disjoint pairs).
- An example draws a day from its split's days and one of `FORMATS` uniformly, and writes words in
  Title, lower or UPPER case. Weekday names are the day's real weekday. English names are spelt out
  here (not taken from the locale), so the data is the same on every machine.
- `generate(split, n, seed)` draws from `random.Random` seeded by (seed, split): the same arguments
  always give the same list, and a split's list does not depend on the other splits' sizes.
"""

from __future__ import annotations

import datetime
import random

FIRST, LAST = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
SPLITS = ("train", "valid", "test")
HELD_OUT = {"test": 0.10, "valid": 0.05}  # fractions of all days; train gets the rest

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Fields: d m (no leading zero), dd mm (two digits), yyyy yy, Month Mon (name, 3 letters),
# Weekday Wkd (name, 3 letters), nth (3rd, 21st, ...). The comment shows 1999-03-03.
FORMATS = (
    "{nth} of {Month}, {yyyy}",  # 3rd of March, 1999
    "the {nth} of {Month} {yyyy}",  # the 3rd of March 1999
    "{Month} {nth}, {yyyy}",  # March 3rd, 1999
    "{Month} {d}, {yyyy}",  # March 3, 1999
    "{Month} {d} {yyyy}",  # March 3 1999
    "{d} {Month} {yyyy}",  # 3 March 1999
    "{Mon} {d}, {yyyy}",  # Mar 3, 1999
    "{d} {Mon} {yy}",  # 3 Mar 99
    "{d}-{Mon}-{yyyy}",  # 3-Mar-1999
    "{Weekday}, {Month} {d}, {yyyy}",  # Wednesday, March 3, 1999
    "{Wkd} {d} {Mon} {yyyy}",  # Wed 3 Mar 1999
    "{Weekday} the {nth} of {Month}, {yyyy}",  # Wednesday the 3rd of March, 1999
    "{mm}/{dd}/{yy}",  # 03/03/99 (US)
    "{m}/{d}/{yyyy}",  # 3/3/1999 (US)
    "{dd}.{mm}.{yyyy}",  # 03.03.1999 (European)
    "{d}.{m}.{yy}",  # 3.3.99 (European)
    "{yyyy}-{m}-{d}",  # 1999-3-3
    "{yyyy}/{mm}/{dd}",  # 1999/03/03
    "{yyyy}{mm}{dd}",  # 19990303
)
CASES = (str, str.lower, str.upper)  # names as written (Title), lower, UPPER


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def write(day: datetime.date, form: str) -> str:
    """The day in one of `FORMATS`, names in Title case."""
    month, weekday = MONTHS[day.month - 1], WEEKDAYS[day.weekday()]
    return form.format(
        d=day.day,
        m=day.month,
        dd=f"{day.day:02d}",
        mm=f"{day.month:02d}",
        yyyy=day.year,
        yy=f"{day.year % 100:02d}",
        Month=month,
        Mon=month[:3],
        Weekday=weekday,
        Wkd=weekday[:3],
        nth=ordinal(day.day),
    )


def split_days(seed: int) -> dict[str, list[datetime.date]]:
    """Every day from FIRST to LAST in exactly one split."""
    days = [FIRST + datetime.timedelta(i) for i in range((LAST - FIRST).days + 1)]
    random.Random(f"dates-{seed}").shuffle(days)
    n_test, n_valid = (round(HELD_OUT[s] * len(days)) for s in ("test", "valid"))
    return {"test": days[:n_test], "valid": days[n_test : n_test + n_valid], "train": days[n_test + n_valid :]}


def generate(split: str, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n (human-written date, ISO date) pairs of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    days = split_days(seed)[split]
    rng = random.Random(f"dates-{seed}-{split}")
    sources, targets = [], []
    for _ in range(n):
        day = rng.choice(days)
        sources.append(rng.choice(CASES)(write(day, rng.choice(FORMATS))))
        targets.append(day.isoformat())
    return sources, targets
