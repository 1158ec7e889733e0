"""Fuzzing the HTTP projection: schemathesis generates requests (valid and
invalid ones) from the server's own `/v1/openapi.json` and checks that no
answer is a 5xx and every answer conforms to the document; and hostile JSON
bodies (values of the wrong type in every field, non-finite numbers, bodies
nested far deeper than any parser's recursion limit, bodies that are not JSON
or not UTF-8) must each get a JSON client error, never a 5xx.

Bounded and derandomized in `make test` (GEOPERA_FUZZ_EXAMPLES per
operation); `make fuzz` sends many more (bench/fuzz.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from tests.fuzz import strategies
from tests.fuzz.corpus import Corpus
from tests.fuzz.invariants import http_outcome, http_violation
from tests.fuzz.support import SAMPLE, Shown, assert_serving, first_failure, forbidden_texts
from tests.support.registry import REGISTRY


@pytest.fixture(scope="module")
def session():
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def openapi(world, session):
    document = session.get(world.server.http_url + "/v1/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(document)


DOWNLOADS = ["items_assets_download_get", "items_assets_download_head", "artifacts_download_get",
             "artifacts_download_head"]  # fmt: skip
# The tile, preview and tilejson routes are in the document too.
TILES = [f"{kind}_{what}" for kind in ("items", "artifacts") for what in ("tile", "preview", "tilejson")]
OPERATIONS = [*REGISTRY.names(), "jobs_events", "projects_jobs_events", *DOWNLOADS, *TILES]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("name", OPERATIONS)
def test_schemathesis_finds_no_server_error_and_no_nonconforming_answer(world, openapi, session, name, mode):
    operation_id = name.replace(".", "_")
    operation = openapi.find_operation_by_id(operation_id)
    headers = {"Authorization": f"Bearer {world.tokens['alpha']}"}

    @SAMPLE
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        response = case.call(base_url=world.server.http_url, session=session, headers=headers, timeout=60)
        case.validate_response(
            response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
            headers=headers,
        )  # fmt: skip

    check()
    assert_serving(world.channel)


def _deep(depth: int, kind: str) -> str:
    """JSON text nested `depth` levels (built as text: no recursion here)."""
    return ("[" * depth + "]" * depth) if kind == "array" else ('{"a":' * depth + "1" + "}" * depth)


DEEP_DEPTHS = [100, 1_000, 10_000, 100_000]


def wrong_typed_bodies(operation: Any, corpus: Corpus) -> st.SearchStrategy[bytes]:
    """JSON objects with the params' field names and values of any type, or
    one field nested deeply; or bodies that are not JSON objects at all."""
    names = [f.name for f in operation.params_type.DESCRIPTOR.fields] or ["anything"]
    any_value = st.one_of(strategies.hostile_json(), strategies.geometries(corpus))
    typed = st.dictionaries(st.sampled_from(names), any_value, max_size=4).map(
        lambda body: json.dumps(body, allow_nan=True).encode()
    )
    deep_field = st.builds(
        lambda field, depth, kind: f'{{"{field}":{_deep(depth, kind)}}}'.encode(),
        st.sampled_from(names), st.sampled_from(DEEP_DEPTHS), st.sampled_from(["array", "object"]),
    )  # fmt: skip
    deep_body = st.builds(lambda depth: _deep(depth, "object").encode(), st.sampled_from(DEEP_DEPTHS))
    # A number literal longer than a double, or than Python's int() reads by default (4,300 digits).
    long_number = st.builds(
        lambda field, zeros: f'{{"{field}":1{"0" * zeros}}}'.encode(),
        st.sampled_from(names),
        st.sampled_from([400, 5_000]),
    )
    not_objects = st.sampled_from([b"", b"null", b"[]", b"1e999", b'"x"', b"{", b"\xff\xfe{}", b'{"a":NaN}', b"{}" * 3])
    return st.one_of(typed, typed, deep_field, deep_body, long_number, not_objects)


@pytest.mark.parametrize("name", REGISTRY.names())
def test_hostile_json_bodies_get_json_client_errors(world, corpus, session, name):
    operation = REGISTRY.get(name)
    url = f"{world.server.http_url}/v1/op/{name}"
    headers = {"Authorization": f"Bearer {world.tokens['alpha']}", "Content-Type": "application/json"}
    forbidden = forbidden_texts(world.home)
    failures: list[str] = []

    def send(body: bytes) -> str | None:
        response = session.post(url, data=body, headers=headers, timeout=60)
        return http_violation(http_outcome(response.status_code, response.content), forbidden)

    @SAMPLE
    @given(body=wrong_typed_bodies(operation, corpus).map(Shown))
    def check(body: Shown) -> None:
        problem = send(body.value)
        assert problem is None, f"{name}: {problem} for body {body!r}"

    try:
        check()
    except Exception as failure:  # an assertion, or hypothesis' FlakyFailure around one
        failures.append(first_failure(failure))
    # Every catalogued depth, each once: the bounded sample must not depend on luck here.
    for depth in DEEP_DEPTHS:
        for kind in ("object", "array"):
            problem = send(f'{{"{kind}":{_deep(depth, kind)}}}'.encode())
            if problem is not None:
                failures.append(f"{name}: {problem} for a body whose {kind} is nested {depth} deep")
    assert_serving(world.channel)
    assert not failures, "\n".join(failures)
