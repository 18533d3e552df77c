"""Schedule checks on the file as a whole: a cc cutoff on the side its step starts from is
refused (naming step and value), legitimate orders pass; the file's encoding (a UTF-8 BOM is
fine, a file that is not UTF-8 text is refused with its name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sicell.cli import cli
from sicell.errors import EXIT_USAGE
from sicell.schedule import ScheduleValidationError, load_schedule, parse_schedule

EXAMPLES = Path(__file__).resolve().parents[1] / "host" / "sicell" / "examples"
FILM = (EXAMPLES / "film-quick.toml").read_text(encoding="utf-8")

HEAD = 'vs = "Li"\n[reference]\nelectrode = "In-Li"\n'


def _cc(label: str, direction: str, until_v: float, extra: str = "") -> str:
    return (
        f'[[step]]\nlabel = "{label}"\nkind = "cc"\ndirection = "{direction}"\n'
        f"current_ua = 50\nuntil_v = {until_v}\n{extra}"
    )


REST = '[[step]]\nkind = "rest"\nduration_s = 60\n'


def _refusal(text: str) -> ScheduleValidationError:
    with pytest.raises(ScheduleValidationError) as ei:
        parse_schedule(text).compile()
    return ei.value


# ---- refused ----------------------------------------------------------------------------------
def test_delithiation_cutoff_below_the_lithiation_cutoff() -> None:
    """The issue's case: film-quick with the delithiation cutoff typed below 0.01 V vs Li."""
    e = _refusal(FILM.replace("until_v = 1.2", "until_v = 0.005"))
    text = str(e)
    assert text.startswith("step 3 ('delith', cc): cutoff until_v = 0.005 V vs Li")
    assert "below where the step starts" in text
    assert "no lower than -0.6100 V cell (0.0100 V vs Li), the cutoff of step 1 ('lith')" in text
    assert "would end at once" in text and "expected a cutoff above" in text
    assert (e.step, e.label, e.key, e.value) == (3, "delith", "until_v", 0.005)


def test_lithiation_cutoff_above_the_previous_delithiation() -> None:
    text = HEAD + _cc("d", "delithiation", 1.0) + REST + _cc("l", "lithiation", 1.1)
    e = _refusal(text)
    assert str(e).startswith("step 2 ('l', cc): cutoff until_v = 1.1 V vs Li")
    assert "above where the step starts" in str(e)
    assert "no higher than +0.3800 V cell (1.0000 V vs Li), the cutoff of step 0 ('d')" in str(e)
    assert "moves the potential down" in str(e)
    assert (e.step, e.key, e.value) == (2, "until_v", 1.1)


def test_refused_in_the_second_pass_of_a_loop() -> None:
    """Only the jump back from the block's end puts step 0 after a delithiation to 0.6 V."""
    text = (
        HEAD
        + _cc("l", "lithiation", 0.8)
        + '[[step]]\nkind = "cv"\nhold_v = 0.5\nduration_s = 60\n'
        + REST  # after a CV hold the rest keeps no bound
        + _cc("d", "delithiation", 0.6)
        + REST
        + '[[step]]\nkind = "loop"\nto = "l"\ncount = 2\n'
    )
    e = _refusal(text)
    assert str(e).startswith("step 0 ('l', cc): cutoff until_v = 0.8 V vs Li")
    assert "the cutoff of step 3 ('d')" in str(e)
    assert e.step == 0


def test_after_a_cv_hold() -> None:
    text = HEAD + '[[step]]\nkind = "cv"\nhold_v = 0.3\nduration_s = 60\n'
    e = _refusal(text + _cc("d", "delithiation", 0.2))
    assert "the hold potential of step 0" in str(e) and e.step == 1


def test_after_a_cccv_lithiation() -> None:
    cccv = (
        '[[step]]\nlabel = "h"\nkind = "cccv"\ndirection = "lithiation"\ncurrent_ua = 50\n'
        "hold_v = 0.05\nuntil_current_ua = 5\n"
    )
    e = _refusal(HEAD + cccv + REST + _cc("d", "delithiation", 0.04))
    assert "the hold potential of step 0 ('h')" in str(e) and e.step == 2


def test_ir_corrected_cutoff_names_the_measured_value() -> None:
    text = (
        HEAD
        + "[cell]\nresistance_ohm = 100\n"
        + _cc("l", "lithiation", 0.5)
        + _cc("d", "delithiation", 0.3, "ir_corrected = true\n")
    )
    e = _refusal(text)
    # 50 µA × 100 Ω: the board sees the cutoff 5 mV above 0.3 V vs Li
    assert "(measured cutoff -0.3150 V cell)" in str(e) and e.step == 1


# ---- accepted ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_compile(path: Path) -> None:
    load_schedule(path).compile()


@pytest.mark.parametrize(
    "steps",
    [
        # deeper in the same direction
        _cc("a", "lithiation", 0.5) + REST + _cc("b", "lithiation", 0.01),
        # the right way round, looped
        _cc("l", "lithiation", 0.01) + REST + _cc("d", "delithiation", 1.2) + REST
        + '[[step]]\nkind = "loop"\nto = "l"\ncount = 3\n',
        # equal to the bound: the cell sits near it, noise decides
        _cc("l", "lithiation", 0.01) + _cc("d", "delithiation", 0.01),
        # a CV hold, then a rest: the cell may relax either way
        '[[step]]\nkind = "cv"\nhold_v = 0.3\nduration_s = 60\n' + REST
        + _cc("d", "delithiation", 0.2),
        # a rest after a lithiation relaxes upwards: the upper bound from before is gone
        _cc("d", "delithiation", 0.4) + _cc("l", "lithiation", 0.2) + REST
        + _cc("l2", "lithiation", 0.5),
        # nothing known before the first step (the run starts wherever the cell is)
        _cc("d", "delithiation", 0.05),
    ],
)  # fmt: skip
def test_legitimate_orders_compile(steps: str) -> None:
    parse_schedule(HEAD + steps).compile()


def test_a_goto_target_may_start_anywhere() -> None:
    """Step 2 follows a lithiation to 0.5 V in order, but a limit's goto reaches it too."""
    text = (
        HEAD
        + _cc("d0", "delithiation", 0.9, '[[step.limit]]\nv = 0.7\nop = ">="\ngoto = "d"\n')
        + _cc("l", "lithiation", 0.5)
        + _cc("d", "delithiation", 0.4)
    )
    parse_schedule(text).compile()


# ---- the file's encoding ----------------------------------------------------------------------
def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    plain, bom = tmp_path / "plain.toml", tmp_path / "bom.toml"
    plain.write_text(FILM, encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + FILM.encode("utf-8"))
    a, b = load_schedule(plain), load_schedule(bom)
    assert a.compile() == b.compile()
    assert b.source_text == FILM
    assert parse_schedule("\ufeff" + FILM).compile() == a.compile()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file (a NUL byte at offset 8)"),
        (b'name = "caf\xe9"\n', "not a text file (byte 0xe9 at offset 11 is not UTF-8)"),
        (FILM.encode("utf-16"), "saved as UTF-16 or UTF-32 text"),
    ],
    ids=["binary", "latin-1", "utf-16"],
)
def test_not_utf8_text_is_refused_with_the_file_name(tmp_path: Path, data: bytes, why: str) -> None:
    p = tmp_path / "odd.toml"
    p.write_bytes(data)
    with pytest.raises(ScheduleValidationError) as ei:
        load_schedule(p)
    assert str(ei.value) == f"{p}: {why}; expected a TOML schedule saved as UTF-8 text"


def test_cli_refuses_a_binary_schedule_in_one_line(tmp_path: Path) -> None:
    p = tmp_path / "photo.toml"
    p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    res = CliRunner().invoke(cli, ["run", str(p), "--port", "loop://"])
    assert res.exit_code == EXIT_USAGE
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [f"error: {p}: not a text file (a NUL byte at offset 4); expected a TOML "
                     "schedule saved as UTF-8 text"]  # fmt: skip
