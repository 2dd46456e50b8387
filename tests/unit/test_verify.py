"""make verify's matrix as data: each row with what usually breaks it."""

from __future__ import annotations

from scripts.verify import matrix


def test_every_row_of_verify_says_what_usually_breaks_it() -> None:
    """A DIVERGED row is followed by its usual causes; the resume row names state kept outside
    state_dict (the break a fork makes most), with what to use instead."""
    rows = matrix(invariant=True, workers=2, quick=False)
    assert all(row.usual_causes for row in rows) and len({r.usual_causes for r in rows}) == 5
    resume = next(row for row in rows if row.guarantee == "resume equals uninterrupted")
    assert "state_dict" in resume.usual_causes and "register_buffer" in resume.usual_causes
