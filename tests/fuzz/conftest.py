"""The corpus of the module's server, shared by the fuzz tests."""

from __future__ import annotations

import pytest

from tests.fuzz.corpus import Corpus, collect_corpus


@pytest.fixture(scope="module")
def corpus(world) -> Corpus:
    return collect_corpus(world)
