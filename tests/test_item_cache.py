"""The items.get cache and miss path: the in-memory cache holds items up to a
budget of bytes (not a count), concurrent misses share one batched lookup
(`= ANY(...)`) and each caller still gets its own item, its own not-found and
its own access check, and Execute sends an item's stored bytes as they are."""

from __future__ import annotations

import asyncio
import os
import secrets
import tracemalloc
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.internal.encoder import _VarintBytes

from geopera.v1 import auth_pb2, catalog_pb2, kernel_pb2, kernel_pb2_grpc, resources_pb2
from geopera_kernel.server import callstats
from geopera_kernel.server.api import convert, wire
from geopera_kernel.server.api.kernel import _execute_response
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.batching import BatchLoader
from geopera_kernel.server.domain.catalog import ByteBudgetLru, RenderedItem, rendered_size
from geopera_kernel.server.errors import DomainError
from tests.support.registry import REGISTRY
from tests.test_item_renders import _copy_item, _fresh_conversion, _stored


def _rendered(size: int) -> RenderedItem:
    return RenderedItem("alpha", os.urandom(size))


def test_the_item_cache_evicts_by_bytes_least_recently_read_first():
    one = rendered_size("it_a", _rendered(1000))
    cache: ByteBudgetLru[RenderedItem] = ByteBudgetLru(3 * one, rendered_size)
    for name in ("it_a", "it_b", "it_c"):
        cache.put(name, _rendered(1000))
    assert len(cache) == 3 and cache.used_bytes == 3 * one
    assert cache.get("it_a") is not None  # read: now the most recent
    cache.put("it_d", _rendered(1000))
    assert cache.get("it_b") is None, "the least recently read goes first"
    assert {k for k in ("it_a", "it_c", "it_d") if cache.get(k) is not None} == {"it_a", "it_c", "it_d"}
    # One large item displaces as many small ones as its bytes need, not one.
    cache.put("it_big", _rendered(2 * one - rendered_size("it_big", _rendered(0))))
    assert len(cache) == 1 + 1 and cache.used_bytes <= cache.budget_bytes
    # Larger than the whole budget: served by the caller, never held, nothing evicted for it.
    held = len(cache)
    cache.put("it_huge", _rendered(4 * one))
    assert cache.get("it_huge") is None and len(cache) == held
    # Putting an id again replaces its entry and its bytes.
    cache.put("it_big", _rendered(10))
    assert cache.used_bytes == sum(
        rendered_size(k, v) for k in ("it_a", "it_c", "it_d", "it_big") if (v := cache.get(k)) is not None
    )
    assert ByteBudgetLru(0, rendered_size).put("it_x", _rendered(1)) is not None  # a zero budget holds nothing


def test_the_byte_budget_counts_what_the_entries_really_take():
    """The budget is about memory: what the cache accounts per item must be
    what Python allocates for it (body, id, entry, LRU links), within 15 %."""
    cache: ByteBudgetLru[RenderedItem] = ByteBudgetLru(1 << 40, rendered_size)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for size in (500, 3700, 20_000) * 1000:
            item_id = "it_" + secrets.token_hex(13)
            cache.put(item_id, RenderedItem(b"alpha".decode(), os.urandom(size)))  # a fresh str, as a row gives
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.85 <= taken / cache.used_bytes <= 1.15, (taken, cache.used_bytes)


async def test_a_batch_loader_coalesces_dedups_and_survives_a_cancelled_waiter():
    calls: list[list[str]] = []
    release = asyncio.Event()

    async def fetch(keys: list[str]) -> tuple[dict[str, str], float]:
        calls.append(keys)
        await release.wait()
        return {k: k.upper() for k in keys if k != "absent"}, 0.001

    loader: BatchLoader[str] = BatchLoader(fetch, max_batch=3, max_in_flight=1)
    tasks = [asyncio.create_task(loader.load(k)) for k in ("a", "b", "a", "absent", "c", "d")]
    await asyncio.sleep(0.01)
    assert calls == [["a", "b", "absent"]], "one batch of max_batch keys, the repeated key asked once"
    tasks[1].cancel()  # a waiter giving up must not cancel the others' answer
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert [r.value for i, r in enumerate(results) if i != 1] == ["A", "A", None, "C", "D"]
    assert calls == [["a", "b", "absent"], ["c", "d"]], "the queued keys went out once the first batch returned"
    assert results[0].batch_size == 3 and results[4].batch_size == 2


async def test_a_failed_batch_fails_each_of_its_waiters():
    async def fetch(keys: list[str]) -> tuple[dict[str, str], float]:
        raise OSError("database gone")

    loader: BatchLoader[str] = BatchLoader(fetch)
    results = await asyncio.gather(*(loader.load(k) for k in ("a", "b")), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    later: BatchLoader[str] = BatchLoader(lambda keys: asyncio.sleep(0, ({k: k for k in keys}, 0.0)))
    assert (await later.load("x")).value == "x"


def _principal(*projects: str) -> Principal:
    return Principal(id="tok_test", kind="user", scopes=frozenset({"catalog:read"}), project_ids=frozenset(projects))


def test_concurrent_misses_share_one_lookup_and_each_caller_gets_its_own_answer(world):
    """Misses asked in the same event-loop turn go out as one batched lookup
    (stored renders and first reads mixed), yet every caller gets its own item,
    its own ITEM_NOT_FOUND, and its own project check: a batch never lets an
    item of another project through."""
    alpha_template = world.items[sorted(world.items)[0]]
    beta_template = next(iter(world.beta_items.values()))
    stored = [_copy_item(world.database_url, alpha_template) for _ in range(4)]
    first_reads = [_copy_item(world.database_url, alpha_template) for _ in range(3)]
    beta = [_copy_item(world.database_url, beta_template) for _ in range(2)]
    absent = ["it_absent_1", "it_absent_2"]

    async def use(services: Any) -> list[tuple[str, Any, Any]]:
        catalog = services.catalog
        for item_id in stored:  # read once with another service: their renders are stored now
            await catalog.get_item_rendered(_principal("alpha"), item_id)
        fresh = type(catalog)(
            services.db, services.storage, renderer=catalog._renderer, item_cache_bytes=catalog._rendered.budget_bytes
        )
        asked = [*stored, *first_reads, *beta, *absent, stored[0]]  # stored[0] twice at once
        alpha = _principal("alpha")

        async def one(item_id: str) -> tuple[str, Any, Any]:
            stats = callstats.begin()  # each gather child runs in its own context copy
            try:
                return item_id, await fresh.get_item_rendered(alpha, item_id), stats
            except DomainError as err:
                return item_id, err, stats

        return await asyncio.gather(*(one(i) for i in asked))

    results = world.with_services(use)
    for item_id, outcome, stats in results:
        if item_id in absent:
            assert isinstance(outcome, DomainError) and outcome.reason == "ITEM_NOT_FOUND", item_id
        elif item_id in beta:
            assert isinstance(outcome, DomainError) and outcome.reason == "PROJECT_ACCESS_DENIED", item_id
        else:
            item = resources_pb2.Item.FromString(outcome)
            assert item.id == item_id and outcome == _fresh_conversion(world.database_url, item_id)
            hit = stats.cache_hits.get("item_render", 0)
            assert hit == (1 if item_id in stored else 0), (item_id, stats)
        # One lookup served every one of these calls (12 asked, 11 distinct ids).
        assert stats.db_uses == 1 and stats.db_batch == 11, (item_id, stats)
    for item_id in first_reads + beta:
        row = _stored(world.database_url, item_id)
        assert row is not None and row["render_key"] == convert.ITEM_RENDER_KEY, "first reads store their render"
    assert _stored(world.database_url, beta[0])["project_id"] == "beta"


def test_concurrent_items_get_calls_through_the_server_keep_errors_and_access_per_call(world):
    """The same through Execute, many calls in flight at once on one channel:
    every response is the item asked for or that id's own error."""
    alpha_template = world.items[sorted(world.items)[0]]
    alpha = [_copy_item(world.database_url, alpha_template) for _ in range(24)]
    beta = [_copy_item(world.database_url, next(iter(world.beta_items.values()))) for _ in range(6)]
    absent = [f"it_absent_{n}" for n in range(6)]
    asked = [*alpha, *beta, *absent] * 2

    async def call_all() -> list[tuple[str, Any]]:
        async with grpc.aio.insecure_channel(world.server.address) as channel:
            stub = kernel_pb2_grpc.KernelServiceStub(channel)
            metadata = (("authorization", "Bearer " + world.tokens["alpha"]),)

            async def one(item_id: str) -> tuple[str, Any]:
                params = any_pb2.Any()
                params.Pack(catalog_pb2.ItemsGetParams(item_id=item_id))
                request = kernel_pb2.ExecuteRequest(operation="items.get", params=params)
                try:
                    return item_id, await stub.Execute(request, metadata=metadata, timeout=30)
                except grpc.aio.AioRpcError as err:
                    return item_id, err

            return await asyncio.gather(*(one(i) for i in asked))

    for item_id, outcome in asyncio.run(call_all()):
        if item_id in alpha:
            result = catalog_pb2.ItemsGetResult()
            assert outcome.operation == "items.get" and outcome.result.Unpack(result)
            assert result.item.id == item_id
        else:
            expected = grpc.StatusCode.NOT_FOUND if item_id in absent else grpc.StatusCode.PERMISSION_DENIED
            assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() == expected, (item_id, outcome)


def test_varints_equal_protobufs_own():
    for value in (*range(300), 0x3FFF, 0x4000, 0x4001, 0x1FFFFF, 0x200000, 2**31, 2**63 - 1):
        assert wire.varint(value) == _VarintBytes(value), value


@pytest.mark.parametrize(
    "operation, result",
    [
        ("items.get", catalog_pb2.ItemsGetResult(item=resources_pb2.Item(id="it_1", name="n", project_id="alpha"))),
        ("auth.whoami", auth_pb2.AuthWhoamiResult()),  # an empty result: Any without a value
        ("auth.whoami", auth_pb2.AuthWhoamiResult(principal_id="tok_" + "x" * 300, scopes=["catalog:read"])),
        # Over 16 KiB: lengths of three varint bytes.
        ("auth.whoami", auth_pb2.AuthWhoamiResult(principal_id="tok_" + "x" * 20_000)),
    ],
)
def test_execute_responses_built_from_bytes_equal_protobufs_own(operation, result):
    packed = any_pb2.Any()
    packed.Pack(result)
    expected = kernel_pb2.ExecuteResponse(operation=operation, result=packed).SerializeToString()
    assert _execute_response(REGISTRY.get(operation), result.SerializeToString()) == expected
