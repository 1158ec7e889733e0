// The contract's operations: names, their params/result messages (by the
// naming rule) and their side effects.

import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";

import {
  AnalyticsExecuteParamsSchema,
  AnalyticsExecuteResultSchema,
  AnalyticsOperationsGetParamsSchema,
  AnalyticsOperationsGetResultSchema,
  AnalyticsOperationsListParamsSchema,
  AnalyticsOperationsListResultSchema,
} from "./gen/geopera/v1/analytics_pb.js";
import { AuthWhoamiParamsSchema, AuthWhoamiResultSchema } from "./gen/geopera/v1/auth_pb.js";
import {
  ItemsCreateParamsSchema,
  ItemsCreateResultSchema,
  ItemsGetParamsSchema,
  ItemsGetResultSchema,
  ItemsLineageParamsSchema,
  ItemsLineageResultSchema,
  ItemsListParamsSchema,
  ItemsListResultSchema,
  ProjectsGetParamsSchema,
  ProjectsGetResultSchema,
  ProjectsListParamsSchema,
  ProjectsListResultSchema,
} from "./gen/geopera/v1/catalog_pb.js";
import {
  CreditsBalanceGetParamsSchema,
  CreditsBalanceGetResultSchema,
  CreditsLedgerListParamsSchema,
  CreditsLedgerListResultSchema,
} from "./gen/geopera/v1/credits_pb.js";
import {
  ClipCreateFromItemParamsSchema,
  ClipCreateFromItemResultSchema,
  ProcessingCreateAndDispatchParamsSchema,
  ProcessingCreateAndDispatchResultSchema,
  ProcessingCreateParamsSchema,
  ProcessingCreateResultSchema,
  ProcessingDispatchParamsSchema,
  ProcessingDispatchResultSchema,
  ProcessingJobTypesGetParamsSchema,
  ProcessingJobTypesGetResultSchema,
  ProcessingJobTypesListParamsSchema,
  ProcessingJobTypesListResultSchema,
  ProcessingJobsCancelParamsSchema,
  ProcessingJobsCancelResultSchema,
  ProcessingJobsGetParamsSchema,
  ProcessingJobsGetResultSchema,
  ProcessingJobsListParamsSchema,
  ProcessingJobsListResultSchema,
  WorkersListParamsSchema,
  WorkersListResultSchema,
} from "./gen/geopera/v1/processing_pb.js";

/** The protobuf package of every params and result message. */
export const PACKAGE = "geopera.v1";

/**
 * `read`: no effect, always safe to retry. `spend`: reserves credits and
 * honours `idempotency-key` (the client always sends one, so a retry replays).
 * `write`: changes state without a key.
 */
export type SideEffect = "read" | "spend" | "write";

export interface OperationSpec<P extends DescMessage = DescMessage, R extends DescMessage = DescMessage> {
  readonly params: P;
  readonly result: R;
  readonly sideEffect: SideEffect;
  /** A write that is safe to repeat (e.g. cancelling a cancelled job). */
  readonly repeatable?: boolean;
}

function op<P extends DescMessage, R extends DescMessage>(
  params: P,
  result: R,
  sideEffect: SideEffect,
  repeatable = false,
): OperationSpec<P, R> {
  return { params, result, sideEffect, repeatable };
}

/**
 * Every operation of the contract this client was built against. Operations a
 * newer server adds still work through `GeoperaClient.execute` (their messages
 * are resolved by the naming rule), just without the static types.
 */
export const OPERATIONS = {
  "auth.whoami": op(AuthWhoamiParamsSchema, AuthWhoamiResultSchema, "read"),
  "projects.get": op(ProjectsGetParamsSchema, ProjectsGetResultSchema, "read"),
  "projects.list": op(ProjectsListParamsSchema, ProjectsListResultSchema, "read"),
  "items.create": op(ItemsCreateParamsSchema, ItemsCreateResultSchema, "write"),
  "items.get": op(ItemsGetParamsSchema, ItemsGetResultSchema, "read"),
  "items.list": op(ItemsListParamsSchema, ItemsListResultSchema, "read"),
  "items.lineage": op(ItemsLineageParamsSchema, ItemsLineageResultSchema, "read"),
  "clip.create_from_item": op(ClipCreateFromItemParamsSchema, ClipCreateFromItemResultSchema, "spend"),
  "processing.create": op(ProcessingCreateParamsSchema, ProcessingCreateResultSchema, "spend"),
  "processing.create_and_dispatch": op(
    ProcessingCreateAndDispatchParamsSchema,
    ProcessingCreateAndDispatchResultSchema,
    "spend",
  ),
  "processing.dispatch": op(ProcessingDispatchParamsSchema, ProcessingDispatchResultSchema, "spend"),
  "processing.jobs.list": op(ProcessingJobsListParamsSchema, ProcessingJobsListResultSchema, "read"),
  "processing.jobs.get": op(ProcessingJobsGetParamsSchema, ProcessingJobsGetResultSchema, "read"),
  "processing.jobs.cancel": op(ProcessingJobsCancelParamsSchema, ProcessingJobsCancelResultSchema, "write", true),
  "processing.job_types.list": op(ProcessingJobTypesListParamsSchema, ProcessingJobTypesListResultSchema, "read"),
  "processing.job_types.get": op(ProcessingJobTypesGetParamsSchema, ProcessingJobTypesGetResultSchema, "read"),
  "workers.list": op(WorkersListParamsSchema, WorkersListResultSchema, "read"),
  "credits.balance.get": op(CreditsBalanceGetParamsSchema, CreditsBalanceGetResultSchema, "read"),
  "credits.ledger.list": op(CreditsLedgerListParamsSchema, CreditsLedgerListResultSchema, "read"),
  "analytics.execute": op(AnalyticsExecuteParamsSchema, AnalyticsExecuteResultSchema, "read"),
  "analytics.operations.list": op(AnalyticsOperationsListParamsSchema, AnalyticsOperationsListResultSchema, "read"),
  "analytics.operations.get": op(AnalyticsOperationsGetParamsSchema, AnalyticsOperationsGetResultSchema, "read"),
} as const satisfies Record<string, OperationSpec>;

export type Operations = typeof OPERATIONS;
/** An operation name known to this client, e.g. `"items.list"`. */
export type OperationName = keyof Operations;
/** The params of an operation as a plain init object (camelCase field names). */
export type ParamsInit<O extends OperationName> = MessageInitShape<Operations[O]["params"]>;
/** The params message of an operation. */
export type ParamsOf<O extends OperationName> = MessageShape<Operations[O]["params"]>;
/** The result message of an operation. */
export type ResultOf<O extends OperationName> = MessageShape<Operations[O]["result"]>;

/**
 * The contract's naming rule: split on `.` and `_`, capitalise each part, join.
 * `clip.create_from_item` -> `ClipCreateFromItem`.
 */
export function messageBaseName(operation: string): string {
  return operation
    .split(/[._]/)
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join("");
}

/** `items.list` -> `geopera.v1.ItemsListParams`. */
export function paramsTypeName(operation: string): string {
  return `${PACKAGE}.${messageBaseName(operation)}Params`;
}

/** `items.list` -> `geopera.v1.ItemsListResult`. */
export function resultTypeName(operation: string): string {
  return `${PACKAGE}.${messageBaseName(operation)}Result`;
}

export function isKnownOperation(operation: string): operation is OperationName {
  return Object.prototype.hasOwnProperty.call(OPERATIONS, operation);
}

export function sideEffectOf(operation: string): SideEffect {
  // Unknown operations are treated as writes: retried only when the server
  // says it did not process them.
  return isKnownOperation(operation) ? OPERATIONS[operation].sideEffect : "write";
}

/** Whether a failed attempt (UNAVAILABLE) may be sent again as it is. */
export function isSafeToRepeat(operation: string): boolean {
  if (!isKnownOperation(operation)) return false;
  const spec: OperationSpec = OPERATIONS[operation];
  return spec.sideEffect !== "write" || spec.repeatable === true;
}
