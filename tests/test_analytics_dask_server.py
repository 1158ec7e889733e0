"""A server started with GEOPERA_DASK_SCHEDULER answers analytics.execute through a real Dask
cluster (two worker processes): the same numbers as the library in-process, the chunk work
seen on the cluster's scheduler, and an unreachable cluster is UNAVAILABLE, not INTERNAL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from geopera_kernel.analytics import AnalyticsContext, AssetView, ItemView, default_registry
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world, stop_world
from tests.support.client import RpcFailure
from tests.support.dask_cluster import local_cluster
from tests.test_analytics_api import ZONES, run

SCENES = ["s2l1c_slovenia_20150711_bgrn", "s2l1c_slovenia_20150731_bgrn", "s2l1c_slovenia_20150820_bgrn"]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with local_cluster(2) as address:
        yield address


@pytest.fixture(scope="module")
def dask_world(database_factory: Any, tmp_path_factory: pytest.TempPathFactory, scheduler: str) -> Iterator[World]:
    env = {**TEST_SERVER_ENV, "GEOPERA_DASK_SCHEDULER": scheduler}
    state = start_seeded_world(database_factory.create(), tmp_path_factory.mktemp("dask-world"), env)
    try:
        yield state
    finally:
        stop_world(state)


def _batches_run(scheduler: str) -> int:
    """How many chunk batches the cluster's scheduler has computed so far."""
    from distributed import Client

    def count(dask_scheduler: Any) -> int:
        return len({str(entry[0]) for entry in dask_scheduler.transition_log if str(entry[0]).startswith("_run_batch")})

    with Client(scheduler, set_as_default=False) as client:
        return int(client.run_on_scheduler(count))


def _library(operation: str, params: dict[str, Any], items: dict[str, Path], tmp_path: Path) -> dict[str, Any]:
    views = {
        item_id: ItemView(id=item_id, assets={"data": AssetView("data", str(path))}) for item_id, path in items.items()
    }
    context = AnalyticsContext(items=views, artifact_dir=tmp_path, workers=2, dask_scheduler=None)
    return json.loads(json.dumps(default_registry().run(operation, params, context)))


def test_zonal_stats_on_the_cluster_equal_the_library(dask_world: World, scheduler: str, tmp_path: Path) -> None:
    item_id = dask_world.items[SCENES[0]]
    before = _batches_run(scheduler)
    for coverage in ("center", "exact"):
        params = {
            "item_id": item_id,
            "index_name": "NDVI",
            "geometry": ZONES,
            "percentiles": [10, 50, 90],
            "coverage": coverage,
        }
        _, result = run(dask_world, "zonal_stats", params)
        reference = _library("zonal_stats", params, {item_id: SAMPLES / f"{SCENES[0]}.tif"}, tmp_path)
        assert result["zones"] == reference["zones"] and len(result["zones"]) == 88
    assert _batches_run(scheduler) > before


def test_time_series_on_the_cluster_equals_the_library(dask_world: World, scheduler: str, tmp_path: Path) -> None:
    ids = [dask_world.items[name] for name in SCENES]
    params = {"item_ids": ids, "index_name": "NDVI", "geometry": ZONES["features"][0]["geometry"], "reducer": "median"}
    before = _batches_run(scheduler)
    _, result = run(dask_world, "time_series", params)
    # Items as the server sees them: the library's answer with the same datetimes.
    steps = result["steps"]
    assert [step["item_id"] for step in steps] and {step["item_id"] for step in steps} == set(ids)
    items = {item_id: SAMPLES / f"{name}.tif" for item_id, name in zip(ids, SCENES, strict=True)}
    for step in steps:
        views = {step["item_id"]: items[step["item_id"]]}
        zonal = _library(
            "zonal_stats",
            {
                "item_id": step["item_id"],
                "index_name": "NDVI",
                "geometry": params["geometry"],
                "stats": ["median", "count"],
            },
            views,
            tmp_path,
        )
        assert step["value"] == zonal["zones"][0]["stats"]["median"]
        assert step["count"] == zonal["zones"][0]["stats"]["count"]
    assert _batches_run(scheduler) > before


def test_an_unreachable_cluster_is_unavailable(database_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {**TEST_SERVER_ENV, "GEOPERA_DASK_SCHEDULER": "tcp://127.0.0.1:9"}  # nothing listens there
    state = start_seeded_world(database_factory.create(), tmp_path_factory.mktemp("no-cluster"), env)
    try:
        item_id = state.items[SCENES[0]]
        with pytest.raises(RpcFailure) as info:
            run(state, "zonal_stats", {"item_id": item_id, "band": 1, "geometry": ZONES})
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.UNAVAILABLE, "ANALYTICS_CLUSTER_UNAVAILABLE")
    finally:
        stop_world(state)
