"""docs/errors.md: every catalogued bad input still gives exactly its documented error, and
leaves no file behind (the cases: tests/error_cases.py)."""

import pytest

from tests import error_cases

CASES = error_cases.cases()


def test_the_catalogue_documents_every_case_and_at_least_30():
    documented = error_cases.documented()
    assert sorted(documented) == sorted(c.id for c in CASES)
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-{c.title}" for c in CASES])
def test_bad_input_gives_the_documented_error_and_writes_nothing(tmp_path, case):
    # Execute: the case's inputs set up, then the bad input
    exc, untouched = error_cases.provoke(case, tmp_path)
    # Assert: the exact documented text; nothing written, changed or left half-written
    assert exc is not None, f"{case.id} ({case.title}) raised no error"
    assert error_cases.message(exc, tmp_path) == error_cases.documented()[case.id]
    assert untouched
