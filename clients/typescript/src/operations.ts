// The contract's operations: names, their params/result messages (by the
// naming rule) and their side effects.

import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";

import { OPERATIONS } from "./operation_table.js";

export { OPERATIONS };

/** The protobuf package of every params and result message. */
export const PACKAGE = "geopera.v1";

/**
 * `read`: no effect, always safe to retry. `spend`: reserves credits and
 * honours `idempotency-key`. `write`: changes state; safe to retry only when
 * the operation honours `idempotency-key` (the client then always sends one,
 * so a retry replays) or is repeatable.
 */
export type SideEffect = "read" | "spend" | "write";

/** An operation as the proto declares it (`option (geopera.v1.operation)`). */
export interface OperationSpec<P extends DescMessage = DescMessage, R extends DescMessage = DescMessage> {
  readonly params: P;
  readonly result: R;
  /** The scope a token needs; "" = any valid token. */
  readonly scope: string;
  readonly sideEffect: SideEffect;
  /** Honours the `idempotency-key` metadata (every spend does). */
  readonly idempotencyKey: boolean;
  /** A write that is safe to repeat (e.g. cancelling a cancelled job). */
  readonly repeatable: boolean;
}

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

/** Whether the operation honours `idempotency-key` (the client sends one for every call of it). */
export function takesIdempotencyKey(operation: string): boolean {
  return isKnownOperation(operation) && OPERATIONS[operation].idempotencyKey;
}

/** Whether a failed attempt (UNAVAILABLE) may be sent again as it is. */
export function isSafeToRepeat(operation: string): boolean {
  if (!isKnownOperation(operation)) return false;
  const spec: OperationSpec = OPERATIONS[operation];
  return spec.sideEffect === "read" || spec.idempotencyKey || spec.repeatable;
}
