# Minimal `machine` for running firmware/main.py under the unix port in tests/test_link.py
# (shadows the built-in: this directory comes first on MICROPYPATH). ENG_RESET_CAUSE selects
# what reset_cause() reports: PWRON, WDT, SOFT, HARD.
import os

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_CAUSES = {"PWRON": PWRON_RESET, "WDT": WDT_RESET, "SOFT": SOFT_RESET, "HARD": HARD_RESET}


def reset_cause():
    return _CAUSES.get(os.getenv("ENG_RESET_CAUSE") or "PWRON", PWRON_RESET)


def unique_id():
    return b"\xe6\x61\x38\x00\x42\x42\x00\x07"


class WDT:
    fed = 0

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout

    def feed(self):
        WDT.fed += 1


def reset():
    raise SystemExit(3)


def soft_reset():
    raise SystemExit(4)
