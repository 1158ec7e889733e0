"""What an analytics method is, and what the server hands it when it runs.

A method is a plugin class in the titiler style: pydantic models for its params and result,
one ``execute`` method, and an ``example``. Methods never see gRPC, the database or
generated code: the server resolves the items a method names (``item_ids``), checks access,
and passes plain views of them in an ``AnalyticsContext``.
"""

from __future__ import annotations

import datetime as dt
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel

from geopera_kernel.raster.domain_errors import not_found


@dataclass(frozen=True)
class AssetView:
    """One asset of an item. ``path`` is anything GDAL can open (a local path, /vsi...).

    ``bands`` is the server's band metadata, one dict per band in band order, shaped like
    ``raster.BandInfo`` as JSON: ``name``, ``common_name``, ``description``,
    ``data_type``, ``nodata`` (a number, ``"NaN"`` or None), ``scale``, ``offset``, ``unit``,
    ``statistics``, ``sensor_band_id``, ``center_wavelength_um``, ``tags``.
    """

    key: str
    path: str
    media_type: str = ""
    roles: tuple[str, ...] = ()
    bands: list[dict[str, Any]] = field(default_factory=list)


class ItemFields(Protocol):
    """What the server's catalogue record and the worker's job source both say of an item."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def datetime(self) -> dt.datetime | None: ...
    @property
    def geometry(self) -> dict[str, Any] | None: ...
    @property
    def properties(self) -> dict[str, Any]: ...


class AssetFields(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def media_type(self) -> str: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def bands(self) -> list[dict[str, Any]]: ...


_Asset = TypeVar("_Asset", bound=AssetFields)


@dataclass(frozen=True)
class ItemView:
    """One catalogue item as a method sees it. ``geometry`` is GeoJSON in lon/lat."""

    id: str
    name: str = ""
    datetime: dt.datetime | None = None
    geometry: dict[str, Any] | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    assets: dict[str, AssetView] = field(default_factory=dict)

    @classmethod
    def of(cls, item: ItemFields, assets: Iterable[_Asset], path: Callable[[_Asset], str]) -> ItemView:
        """``item`` with each of ``assets`` opened at ``path(asset)``: the server builds its
        views from catalogue records, the worker from a job's sources."""
        return cls(
            id=item.id,
            name=item.name,
            datetime=item.datetime,
            geometry=item.geometry,
            properties=item.properties,
            assets={
                asset.key: AssetView(asset.key, path(asset), asset.media_type, tuple(asset.roles), asset.bands)
                for asset in assets
            },
        )


@dataclass(frozen=True)
class Artifact:
    """A file a method produced, to be stored by the server under ``key``."""

    key: str
    path: Path
    media_type: str
    title: str


def _never_cancelled() -> None:
    return None


@dataclass
class AnalyticsContext:
    """Everything a running method may use besides its params.

    ``check_cancelled`` raises (whatever the server chose, e.g. a cancelled-call DomainError)
    once the call is cancelled; long loops call it between blocks. ``workers`` is how many
    threads the method may run at once (it includes the calling thread's share of the work).
    ``scratch_dir`` is where temporary files may go (None: the system temporary directory);
    ``artifact_dir`` and ``scratch_dir`` may not exist yet (most calls write no file): a method
    creates them before writing there;
    ``memory_budget_bytes`` bounds the pixel values a method keeps in memory for
    percentiles before spilling them to scratch files.
    ``dask_scheduler`` (default: ``GEOPERA_DASK_SCHEDULER``, e.g. ``tcp://host:8786``) sends the
    engine's chunk work to that Dask cluster (``cluster.py``); None runs it in this process.
    ``plans`` is what a method planned for this call, shared by the contexts of one call (the
    server's ``pixels_to_read`` and then its run): a method may leave its plan there in
    ``pixels_to_read`` and take it back in ``execute`` instead of planning twice.
    """

    items: dict[str, ItemView]
    artifact_dir: Path
    workers: int = 1
    cancel_check: Callable[[], None] = _never_cancelled
    scratch_dir: Path | None = None
    memory_budget_bytes: int = 256 * 1024 * 1024
    artifacts: list[Artifact] = field(default_factory=list)
    dask_scheduler: str | None = field(default_factory=lambda: os.environ.get("GEOPERA_DASK_SCHEDULER") or None)
    plans: dict[str, Any] = field(default_factory=dict)

    def check_cancelled(self) -> None:
        self.cancel_check()

    def add_artifact(self, key: str, path: Path, media_type: str, title: str) -> Artifact:
        """Record a file written under ``artifact_dir`` as an output of this call."""
        artifact = Artifact(key, Path(path), media_type, title)
        self.artifacts.append(artifact)
        return artifact

    def item(self, item_id: str) -> ItemView:
        """The pre-resolved item; the server resolves every id of ``item_ids(params)``."""
        try:
            return self.items[item_id]
        except KeyError:
            raise not_found(
                "ITEM_NOT_FOUND", f"item {item_id!r} was not resolved for this call", item_id=item_id
            ) from None


class AnalyticsMethod(ABC):
    """An analytics plugin. Subclasses set the class variables and implement two methods.

    ``execute`` is synchronous and may be long: the server runs it in a worker thread.
    It raises ``geopera_kernel.raster.domain_errors.DomainError`` for anything the caller can fix.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]
    output_model: ClassVar[type[BaseModel]]
    example: ClassVar[dict[str, Any]]

    @abstractmethod
    def item_ids(self, params: Any) -> list[str]:
        """Ids of the items ``execute`` reads, in the order it reads them (no duplicates)."""

    @abstractmethod
    def execute(self, params: Any, ctx: AnalyticsContext) -> BaseModel:
        """Compute the result (an instance of ``output_model``)."""

    def pixels_to_read(self, params: Any, ctx: AnalyticsContext) -> int | None:
        """What a validate-only call answers: the pixels ``execute`` would read (its
        result's ``pixels_read``), found from the params and the rasters' headers without
        reading a pixel, raising what ``execute`` would raise before reading. Share the
        planning code with ``execute`` so the two agree. None (the default): the method
        cannot tell without reading."""
        return None
