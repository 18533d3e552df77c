"""Schedule files: what the cell sees, written in TOML, checked and compiled for the board.

The user reference (vocabulary, units, one-liners, examples) is ``host/docs/schedule.md``; a
test parses and compiles every example in it and checks that it names every key the parser
accepts.

Pipeline, one module per stage: ``parse`` (TOML → ``Schedule`` of specs; ``parse_step`` for
``[[step]]`` tables, ``oneliner`` for ``step = "..."`` strings), ``resolve`` (specs → steps in
board terms, checked against the board's limits), ``compile`` (→ the wire blob of
``protocol/schedule.py``), ``estimate`` (run time, warnings). ``model`` holds the dataclasses,
``vocabulary`` the keys and units, ``tomlwrite`` writes schedule documents back to TOML.

Conventions (DESIGN.md §5): current + = lithiation of the working electrode, step numbers are
0-based, unknown keys are errors.
"""

from __future__ import annotations

from sicell.errors import ScheduleError
from sicell.schedule.document import Schedule as Schedule
from sicell.schedule.model import *  # noqa: F403  (the package exports what model.__all__ names)
from sicell.schedule.parse import load_schedule as load_schedule
from sicell.schedule.parse import parse_schedule as parse_schedule
from sicell.schedule.vocabulary import KIND_CODES as KIND_CODES
from sicell.units import REFERENCES as REFERENCES
from sicell.units import Reference as Reference
from sicell.units import to_cell_v as to_cell_v
from sicell.units import to_li_v as to_li_v

ScheduleValidationError = ScheduleError
"""The name the schedule code and its callers use for ``sicell.errors.ScheduleError``."""
