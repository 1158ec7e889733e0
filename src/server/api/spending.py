"""What the spending operations share: the store of an idempotent call's outcome
(its response encoded as the operation packs it), and the packing of a spend on a job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message

from geopera_kernel.server.api import convert
from geopera_kernel.server.api.registry import OperationContext
from geopera_kernel.server.domain.idempotency import KeyedStore
from geopera_kernel.server.domain.jobs import JobSpend

T = TypeVar("T")
R = TypeVar("R", bound=Message)


def keyed(ctx: OperationContext, result: Callable[[T], Message]) -> KeyedStore[T] | None:
    """An idempotent call's store, its responses encoded as `result` packs them."""
    if ctx.keyed is None:
        return None
    return KeyedStore(ctx.keyed, lambda outcome: result(outcome).SerializeToString())


def spend_result(result_type: type[R]) -> Callable[[JobSpend], R]:
    """How a spend is packed as `result_type`: the job, the estimate and, where the
    result has the field, the dispatch (processing.proto's create/dispatch/resubmit results)."""
    with_dispatch = "dispatch" in result_type.DESCRIPTOR.fields_by_name

    def pack(spend: JobSpend) -> R:
        fields: dict[str, Any] = {"job": convert.job(spend.job), "estimate": convert.estimate(spend.estimate)}
        if with_dispatch:
            fields["dispatch"] = convert.dispatch(spend.dispatch)
        return result_type(**fields)

    return pack
