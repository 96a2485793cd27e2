"""The answers every front end shares: Retry-After in whole seconds, page sizes."""

from __future__ import annotations

import math

import pytest

from roomkeeper.answers import page_size, retry_after


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.0, "1"), (0.01, "1"), (1.0, "1"), (1.2, "2"), (59.99, "60"), (-3, "1"), (math.inf, "1")],
)
def test_retry_after_whole_seconds(seconds: float, header: str) -> None:
    assert retry_after(seconds) == {"Retry-After": header}


# --- page_size ----------------------------------------------------------------------------


def test_page_size_absent_or_empty_is_the_default() -> None:
    assert page_size(None, default=100, maximum=1000) == 100
    assert page_size("", default=100, maximum=1000) == 100


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("42", 42), ("1000", 1000), ("0007", 7)])
def test_page_size_ascii_digits(text: str, value: int) -> None:
    assert page_size(text, default=100, maximum=1000) == value


@pytest.mark.parametrize(
    "text",
    ["0", "1001", "-1", "+5", " 5", "5 ", "1e3", "0x10", "\u00b2", "\u0663", "\uff15", "99999"],
    ids=[
        "zero",
        "over",
        "minus",
        "plus",
        "space-before",
        "space-after",
        "exponent",
        "hex",
        "superscript-two",
        "arabic-indic-three",
        "fullwidth-five",
        "five-digits",
    ],
)
def test_page_size_anything_else_is_refused(text: str) -> None:
    """str.isdigit() takes "²" (int() then fails: a 500) and Arabic-Indic digits (which
    int() reads): only ASCII digits are a page size."""
    with pytest.raises(ValueError, match="from 1 to 1000"):
        page_size(text, default=100, maximum=1000)
