# Test board config for firmware/main.py under tests/test_link.py (shadows firmware/board.py).


def load(path=None):
    return {
        "board": "eng-fake",
        "limits": {"v_min_uV": -2000000, "v_max_uV": 2000000, "compliance_uV": 4500000},
        "watchdog_ms": 5000,
    }
