"""The name rules (`server/domain/names.py`): each accepts its longest good name and
refuses what its shape excludes, a trailing newline included (`$` lets one through)."""

from __future__ import annotations

import pytest

from geopera_kernel.server.domain import names
from geopera_kernel.server.errors import Code, DomainError

# (rule, the longest good name, names it refuses)
RULES = [
    (names.COLLECTION_ID, "A" + "b.-_" * 15 + "cd", ["", "-a", ".a", "a/b", "a b", "x" * 64, "naïve"]),
    (names.ASSET_KEY, "a" + "b-_" * 20 + "cd", ["", "A", "-a", "a.b", "a b", "x" * 64]),
    (names.JOB_TYPE_ID, "a" + "b_1" * 20 + "cd", ["", "1a", "_a", "a-b", "A", "x" * 64]),
    (names.WORKER_ID, "W" + "b.-_" * 15 + "cde", ["", "-a", "a/b", "a b", "x" * 65]),
    (names.UPLOAD_NAME, "A" + "b-_" * 20 + "cd", ["", "-a", "a.b", "a/b", "x" * 64]),
]


@pytest.mark.parametrize(("rule", "longest", "bad"), RULES)
def test_a_rule_takes_its_longest_name_and_refuses_the_rest(rule, longest, bad):
    assert rule.matches(longest)
    for name in [*bad, longest + "x", longest[:-1] + "\n", "a\n", "\na"]:
        assert not rule.matches(name), repr(name)


def test_require_names_the_field_the_reason_and_the_shape():
    with pytest.raises(DomainError) as refused:
        names.ASSET_KEY.require("data\n", what="an asset key", reason="INVALID_ASSET_KEY", field="assets[0].key")
    error = refused.value
    assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "INVALID_ASSET_KEY")
    assert error.message == f"an asset key must be {names.ASSET_KEY.shape}"
    assert [violation.field for violation in error.violations] == ["assets[0].key"]
