"""In-memory caches of items: they never change once registered (there is no
update or delete), so a read-through cache is always right, on every replica."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from geopera_kernel.server.config import DEFAULT_ITEM_CACHE_BYTES
from geopera_kernel.server.domain.models import ItemRecord

ITEM_CACHE_SIZE = 4096  # item records held in memory (get_item: jobs, analytics, clips)
ASSET_FILE_CACHE_SIZE = 4096  # where assets' bytes are (downloads, HTTP range reads)
# Memory for items held encoded (items.get), GEOPERA_ITEM_CACHE_BYTES.
ITEM_CACHE_BYTES = DEFAULT_ITEM_CACHE_BYTES
# What a cached encoding costs beside its body and id: the entry object, the
# bytes and str headers, the project id string and the LRU's hash slot and
# links (tracemalloc of a filled cache; tests/test_item_cache.py checks it).
RENDER_ENTRY_OVERHEAD_BYTES = 400
# items.get misses looked up in one query at most, and such queries out at once.
RENDER_BATCH_MAX = 128
RENDER_BATCHES_IN_FLIGHT = 2
V = TypeVar("V")


class LruCache(Generic[V]):
    """A bounded LRU by item id, for what never changes once an item exists."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._values: OrderedDict[str, V] = OrderedDict()

    def get(self, item_id: str) -> V | None:
        value = self._values.get(item_id)
        if value is not None:
            self._values.move_to_end(item_id)
        return value

    def put(self, item_id: str, value: V) -> V:
        self._values[item_id] = value
        if len(self._values) > self._capacity:
            self._values.popitem(last=False)
        return value


class ByteBudgetLru(Generic[V]):
    """A bounded LRU by item id that holds values up to a budget of bytes
    (`size` says what one costs), not up to a count: items vary in size (a
    band's statistics, many assets), memory does not."""

    def __init__(self, budget_bytes: int, size: Callable[[str, V], int]) -> None:
        self.budget_bytes = budget_bytes
        self._size = size
        self._values: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.used_bytes = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, item_id: str) -> V | None:
        entry = self._values.get(item_id)
        if entry is None:
            return None
        self._values.move_to_end(item_id)
        return entry[0]

    def put(self, item_id: str, value: V) -> V:
        old = self._values.pop(item_id, None)
        if old is not None:
            self.used_bytes -= old[1]
        cost = self._size(item_id, value)
        if cost > self.budget_bytes:
            return value  # larger than the whole budget: served, never held
        self._values[item_id] = (value, cost)
        self.used_bytes += cost
        while self.used_bytes > self.budget_bytes:
            _, (_, evicted) = self._values.popitem(last=False)
            self.used_bytes -= evicted
        return value


@dataclass(frozen=True)
class ItemRenderer:
    """How the transport encodes an item for the wire, injected by the
    composition root (the domain imports no generated code). `key` names the
    encoding: renders stored under another key are stale and written anew."""

    key: str
    render: Callable[[ItemRecord], bytes]


@dataclass(frozen=True, slots=True)
class RenderedItem:
    project_id: str
    body: bytes
    # Whether it came from its stored render (False: built from its rows now).
    stored: bool = True


def rendered_size(item_id: str, rendered: RenderedItem) -> int:
    return len(rendered.body) + len(item_id) + RENDER_ENTRY_OVERHEAD_BYTES
