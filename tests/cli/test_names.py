"""Names (models, labels, datasets) are checked in full: no trailing newline, no all-digit label."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fdl.jobspec import JobSpec, valid_label, valid_name


@pytest.mark.parametrize("name", ["evil\n", "a/b", "", "-x", "A", "x" * 65, "a\nb"])
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)
    with pytest.raises(ValidationError, match="publish_as"):
        JobSpec(model="mnist_logreg", publish_as=name)


def test_labels_are_not_all_digits() -> None:
    assert valid_label("stable") and valid_label("v2") and valid_name("123")
    assert not valid_label("123") and not valid_label("stable\n")
