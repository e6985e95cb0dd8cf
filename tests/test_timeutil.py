"""The wire's timestamps: naive UTC ISO-8601 with microseconds, as the reference writes them."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

from gofannon.timeutil import now_iso


def test_now_iso_is_the_references_form_and_the_current_utc_time() -> None:
    seen = []
    for _ in range(2000):  # spans second boundaries now and then: the cached date part must follow
        stamp = now_iso()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", stamp), stamp
        seen.append(stamp)
    assert seen == sorted(seen)  # never backwards (the clock is not being set during the test)
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    stamp = datetime.fromisoformat(now_iso())
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    assert before - timedelta(milliseconds=1) <= stamp <= after + timedelta(milliseconds=1)
    time.sleep(1.01 - time.time() % 1)  # just past a second boundary
    assert abs(datetime.fromisoformat(now_iso()) - datetime.now(timezone.utc).replace(tzinfo=None)) < timedelta(
        milliseconds=5)
