"""What the spending operations share: how a call commits (under its idempotency key,
its response encoded as the operation packs it, or validate-only), and the packing of a
spend on a job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message

from geopera_kernel.server.api import convert
from geopera_kernel.server.api.registry import OperationContext
from geopera_kernel.server.domain.call_commit import CallCommit
from geopera_kernel.server.domain.idempotency import KeyedStore
from geopera_kernel.server.domain.jobs import JobSpend

T = TypeVar("T")
R = TypeVar("R", bound=Message)


def call_commit(ctx: OperationContext, result: Callable[[T], Message]) -> CallCommit[T]:
    """How the call commits: an idempotent one with its responses encoded as `result` packs them."""
    keyed: KeyedStore[T] | None = None
    if ctx.keyed is not None:
        keyed = KeyedStore(ctx.keyed, lambda outcome: result(outcome).SerializeToString())
    return CallCommit(keyed, ctx.validate_only)


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
