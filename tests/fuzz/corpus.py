"""Real values of the server under test, collected once per server: the ids,
page tokens and published schemas the hostile requests mix in (so they get
past the first lookup), and one valid request per operation (its seed, from
the auth matrix's builders) to make hostile one part at a time.

Plain data (seeds as serialized bytes) so the `make fuzz` runner can hand it
to generator processes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.message import Message

from geopera_kernel.server.api.registry import Operation

if TYPE_CHECKING:
    from tests.conftest import World


@dataclass(frozen=True)
class Corpus:
    aoi: dict[str, Any]
    project_ids: tuple[str, ...] = ("alpha", "beta")
    item_ids: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()
    upload_ids: tuple[str, ...] = ()
    artifact_ids: tuple[str, ...] = ()
    collection_ids: tuple[str, ...] = ("s2_slovenia",)
    resource_names: tuple[str, ...] = ()
    # job type id / analytics method name -> its published JSON Schema
    job_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    analytics: dict[str, dict[str, Any]] = field(default_factory=dict)
    page_tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # operation -> (token name, serialized valid params)
    seeds: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def __repr__(self) -> str:  # hypothesis shows strategies' arguments: keep it short
        return f"Corpus({len(self.item_ids)} items, {len(self.job_ids)} jobs, {len(self.seeds)} seeds)"

    def all_page_tokens(self) -> tuple[str, ...]:
        return tuple(token for tokens in self.page_tokens.values() for token in tokens)

    def seed(self, operation: Operation) -> Message | None:
        entry = self.seeds.get(operation.name)
        return None if entry is None else operation.params_type.FromString(entry[1])


def collect_corpus(world: World) -> Corpus:
    """Ids, tokens and schemas of `world`'s server, and a valid request per operation."""
    from geopera.v1 import analytics_pb2, catalog_pb2, credits_pb2, processing_pb2
    from tests.conftest import SAMPLES
    from tests.support.matrix import CASES
    from tests.support.registry import REGISTRY

    alpha, admin = world.client("alpha"), world.client("admin")
    seeds: dict[str, tuple[str, bytes]] = {}
    for operation in REGISTRY:
        case = CASES.get(operation.name)
        if case is not None:
            seeds[operation.name] = (case.ok_token, case.ok(world).SerializeToString())

    def jobs(project: str) -> list[str]:
        listed = world.client(project).execute(
            "processing.jobs.list", processing_pb2.ProcessingJobsListParams(project_id=project)
        )
        return [job.id for job in listed.jobs]

    def token(operation: str, params: Message, client: Any = alpha) -> tuple[str, ...]:
        got = client.execute(operation, params).next_page_token  # type: ignore[attr-defined]
        return (got,) if got else ()

    page_tokens = {
        "items.list": token("items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=1)),
        "processing.jobs.list": token(
            "processing.jobs.list", processing_pb2.ProcessingJobsListParams(project_id="alpha", page_size=1)
        ),
        "credits.ledger.list": token(
            "credits.ledger.list", credits_pb2.CreditsLedgerListParams(project_id="alpha", page_size=1)
        ),
        "projects.list": token("projects.list", catalog_pb2.ProjectsListParams(page_size=1), admin),
    }
    job_types = {
        t.job_type_id: json_format.MessageToDict(t.input_schema)
        for t in alpha.execute("processing.job_types.list", processing_pb2.ProcessingJobTypesListParams()).job_types
    }
    analytics = {
        m.name: json_format.MessageToDict(m.input_schema)
        for m in alpha.execute("analytics.operations.list", analytics_pb2.AnalyticsOperationsListParams()).operations
    }
    item_ids = tuple(world.items.values()) + tuple(world.beta_items.values())
    resource_names = tuple(f"items/{item_id}/assets/data" for item_id in item_ids)
    upload = alpha.upload("alpha", b"not a raster")
    return Corpus(
        aoi=json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text()),
        item_ids=item_ids,
        job_ids=tuple(jobs("alpha") + jobs("beta")),
        upload_ids=(upload.upload_id,),
        collection_ids=("s2_slovenia", "matrix", "fuzz"),
        resource_names=resource_names,
        job_types=job_types,
        analytics=analytics,
        page_tokens={k: v for k, v in page_tokens.items() if v},
        seeds=seeds,
    )
