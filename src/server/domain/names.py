"""The names clients and workers choose (collection ids, asset keys, job type
ids, worker ids, the names of uploaded outputs): what each may look like, said
once, so that a check and the message that explains it cannot drift apart.

A name must match its pattern whole: `re.fullmatch`, since `$` would also let a
trailing newline through."""

from __future__ import annotations

import re
from dataclasses import dataclass

from geopera_kernel.server.errors import invalid_argument


@dataclass(frozen=True)
class NameRule:
    pattern: re.Pattern[str]
    shape: str  # how an error message describes a good name

    def matches(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None

    def require(self, name: str, *, what: str, reason: str, field: str) -> None:
        """Refuses `name` (INVALID_ARGUMENT `reason` on `field`) unless it matches;
        `what` names it in the message."""
        if not self.matches(name):
            raise invalid_argument(reason, f"{what} must be {self.shape}", field=field)


def _rule(length: int, *, upper_case: bool, others: str, digit_first: bool = True) -> NameRule:
    """1 to `length` letters (lower-case only unless `upper_case`), digits and the
    characters of `others`, starting with a letter (or a digit, when `digit_first`):
    the pattern and its description built from the same parts."""
    letters = "A-Za-z" if upper_case else "a-z"
    first = letters + ("0-9" if digit_first else "")
    pattern = re.compile(f"[{first}][{letters}0-9{re.escape(others)}]{{0,{length - 1}}}")
    kinds = ["letters" if upper_case else "lower-case letters", "digits", *(f"'{c}'" for c in others)]
    listed = f"{', '.join(kinds[:-1])} or {kinds[-1]}"
    return NameRule(pattern, f"1-{length} {listed}, starting with a letter{' or digit' if digit_first else ''}")


COLLECTION_ID = _rule(63, upper_case=True, others="_.-")
ASSET_KEY = _rule(63, upper_case=False, others="_-")
JOB_TYPE_ID = _rule(63, upper_case=False, others="_", digit_first=False)
WORKER_ID = _rule(64, upper_case=True, others="_.-")
UPLOAD_NAME = _rule(63, upper_case=True, others="_-")  # an uploaded output's output key and asset key
