"""Properties beyond "no INTERNAL": documented equivalences the server must
keep for any generated input. `band_mapping` names a band by its 1-based
index or by its name (README and the published schema: `{"RED": 3, "nir":
"B08"}`, keys case-insensitive), so a mapping by index and the same mapping
by name must answer alike, result for result."""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from geopera.v1 import analytics_pb2, catalog_pb2
from tests.fuzz.support import SAMPLE
from tests.jobs_support import struct
from tests.support.client import RpcFailure

INDICES = ["NDVI", "NDWI", "GNDVI", "EVI", "SAVI"]


def _answer(client, params: dict) -> tuple[str, object]:
    request = analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=struct(params))
    try:
        result = client.execute("analytics.execute", request, timeout=60)
    except RpcFailure as failure:
        return failure.code.name, (failure.reason, failure.violations)
    return grpc.StatusCode.OK.name, json_format.MessageToDict(result)["result"]


def test_band_mapping_by_index_answers_as_by_name(world, corpus):
    client = world.client("alpha")
    item_id = world.items["s2l1c_slovenia_20150711_bgrn"]
    item = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id)).item
    bands = [band.name for band in item.assets["data"].bands]
    assert all(bands), "the sample's bands have names"
    common = ["blue", "green", "red", "nir"]
    mappings = st.dictionaries(
        st.sampled_from(common).flatmap(lambda name: st.sampled_from([name, name.upper(), name.title()])),
        st.integers(1, len(bands)),
        min_size=1,
        max_size=4,
    )

    @SAMPLE
    @given(index_name=st.sampled_from(INDICES), by_index=mappings)
    def check(index_name: str, by_index: dict[str, int]) -> None:
        by_name = {key: bands[position - 1] for key, position in by_index.items()}
        base = {"item_id": item_id, "index_name": index_name, "geometry": corpus.aoi}
        indexed = _answer(client, {**base, "band_mapping": by_index})
        named = _answer(client, {**base, "band_mapping": by_name})
        shown = f"{indexed[0]} {str(indexed[1])[:300]}; by name {named[0]}"
        assert indexed == named, f"{index_name} with {by_index}: {shown}"

    check()
