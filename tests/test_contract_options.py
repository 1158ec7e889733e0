"""The contract as data (issue 18, move 4): an operation's name, scope and side
effect are declared once, on its params message (`option (geopera.v1.operation)`);
the registry equals the proto, the generated tables are fresh, and
analytics.execute, a write that stores artifacts, honours `idempotency-key`."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2

from geopera.v1 import analytics_pb2, options_pb2
from geopera_kernel.server.api.registry import SIDE_EFFECTS, message_base_name
from geopera_kernel.server.mcp.kernel import KernelError, _retryable
from tests.conftest import SAMPLES
from tests.support.client import RpcFailure
from tests.support.registry import REGISTRY
from tests.support.server import REPO

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


def _declared_in_proto() -> dict[str, tuple[str, options_pb2.OperationOptions]]:
    """Every params message of geopera.v1 that declares an operation, by operation name."""
    import importlib
    import pkgutil

    import geopera.v1

    found = {}
    for info in pkgutil.iter_modules(geopera.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"geopera.v1.{info.name}")
            for message in module.DESCRIPTOR.message_types_by_name.values():
                if message.GetOptions().HasExtension(options_pb2.operation):
                    declared = message.GetOptions().Extensions[options_pb2.operation]
                    assert declared.name not in found, f"{declared.name} declared twice"
                    found[declared.name] = (message.name, declared)
    return found


def test_the_registry_is_the_proto_for_every_operation():
    declared = _declared_in_proto()
    assert sorted(declared) == REGISTRY.names()
    for operation in REGISTRY:
        message, options = declared[operation.name]
        assert message == operation.params_type.DESCRIPTOR.name == message_base_name(operation.name) + "Params"
        assert (operation.scope, operation.side_effect) == (options.scope, SIDE_EFFECTS[options.side_effect])
        assert (operation.idempotency_key, operation.repeatable) == (options.idempotency_key, options.repeatable)
        # Every spend honours a key; a key is honoured only where its project is known.
        assert operation.side_effect != "spend" or operation.idempotency_key
        has_project = operation.key_project is not None or operation.claims_key
        assert operation.idempotency_key == has_project, operation.name
    # The declaration issue 18 corrects: change_detection stores artifacts.
    execute = REGISTRY.get("analytics.execute")
    assert (execute.side_effect, execute.idempotency_key) == ("write", True)


def test_the_generated_tables_are_fresh():
    run = subprocess.run(
        [sys.executable, "scripts/gen_contract.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def test_the_sdk_table_and_retry_rules_follow_the_proto():
    from geopera_sdk._convert import is_safe_to_repeat, takes_idempotency_key
    from geopera_sdk._operations import OPERATIONS

    assert sorted(OPERATIONS) == REGISTRY.names()
    for operation in REGISTRY:
        entry = OPERATIONS[operation.name]
        assert tuple(entry) == (operation.scope, operation.side_effect, operation.idempotency_key, operation.repeatable)
        assert takes_idempotency_key(operation.name) is operation.idempotency_key
        safe = operation.side_effect == "read" or operation.idempotency_key or operation.repeatable
        assert is_safe_to_repeat(operation.name) is safe
        # The MCP server sends a key for every keyed call, so it retries the same rule.
        assert _retryable(KernelError("UNAVAILABLE", "", ""), operation) is safe
    assert not is_safe_to_repeat("items.create") and is_safe_to_repeat("analytics.execute")


def _change_detection(world, key: str, threshold: float):
    before, after = world.items["s2l1c_slovenia_20150711_bgrn"], world.items["s2l1c_slovenia_20150909_bgrn"]
    params = struct_pb2.Struct()
    params.update({"before_item_id": before, "after_item_id": after, "index_name": "NDVI",
                   "change_threshold": threshold, "geometry": AOI})  # fmt: skip
    return world.client("alpha").execute(
        "analytics.execute",
        analytics_pb2.AnalyticsExecuteParams(operation="change_detection", params=params),
        timeout=120,
        idempotency_key=key,
    )


def _artifacts(world) -> int:
    with psycopg.connect(world.database_url) as conn:
        return conn.execute("SELECT count(*) FROM artifacts WHERE operation = 'change_detection'").fetchone()[0]


def test_a_retried_change_detection_stores_its_artifacts_once(world):
    before = _artifacts(world)
    first = _change_detection(world, "contract-cd-1", 0.05)
    stored = _artifacts(world)
    assert stored == before + len(first.outputs) > before
    again = _change_detection(world, "contract-cd-1", 0.05)
    assert again == first and _artifacts(world) == stored  # replayed: same response, nothing stored
    with pytest.raises(RpcFailure) as info:
        _change_detection(world, "contract-cd-1", 0.2)
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    # A new key is new work.
    other = _change_detection(world, "contract-cd-2", 0.05)
    assert {o.id for o in other.outputs}.isdisjoint({o.id for o in first.outputs})
    assert _artifacts(world) == stored + len(other.outputs)


def test_concurrent_duplicates_of_a_change_detection_store_once(world):
    """The computation holds no connection: both duplicates compute, the second
    finds the key taken when it stores, drops its files and replays the first."""
    before = _artifacts(world)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: _change_detection(world, "contract-cd-concurrent", 0.07), range(2))
    assert first == second and len(first.outputs) == 2
    assert _artifacts(world) == before + 2
