"""docs/errors.md: every catalogued bad input still gives exactly its documented error, and
leaves no file behind (the cases: tests/error_cases.py)."""

from pathlib import Path

import pytest

from tests import error_cases

CASES = error_cases.cases()


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_catalogue_documents_every_case_and_at_least_30():
    documented = error_cases.documented()
    assert sorted(documented) == sorted(c.id for c in CASES)
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}-{c.title}" for c in CASES])
def test_bad_input_gives_the_documented_error_and_writes_nothing(tmp_path, case):
    # Prepare: the case's inputs; every file under tmp_path now
    if case.setup is not None:
        case.setup(tmp_path)
    before = _files(tmp_path)
    # Execute
    try:
        case.provoke(tmp_path)
    except BaseException as exc:  # noqa: BLE001 - the error is the result
        error = error_cases.message(exc, tmp_path)
    else:
        pytest.fail(f"{case.id} ({case.title}) raised no error")
    # Assert: the exact documented text; nothing written, changed or left half-written
    assert error == error_cases.documented()[case.id]
    assert _files(tmp_path) == before
