// Typed errors, parsed from the rich status (`grpc-status-details-bin`).

import { fromBinary, type JsonObject, type Message } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Metadata, status as Code, type ServiceError } from "@grpc/grpc-js";

import { ExpectedSchemaSchema, type ExpectedSchema as ExpectedSchemaMessage } from "./gen/geopera/v1/errors_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  type BadRequest,
  type ErrorInfo,
} from "./gen/google/rpc/error_details_pb.js";
import { StatusSchema, type Status } from "./gen/google/rpc/status_pb.js";
import { registry } from "./gen/index.js";

export { Code };

/** The metadata key of the serialized `google.rpc.Status`. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

export interface FieldViolation {
  /** Path of the offending field, e.g. `intersects.coordinates[0]`. */
  field: string;
  description: string;
  /** UPPER_SNAKE_CASE reason of this violation, when the server gives one. */
  reason: string;
}

export interface ExpectedJsonSchema {
  /** An analytics method name or a job type id. */
  subject: string;
  /** The JSON Schema the params must satisfy. */
  jsonSchema: JsonObject;
}

export interface GeoperaErrorInit {
  code?: Code;
  reason?: string;
  domain?: string;
  metadata?: Record<string, string>;
  fieldViolations?: FieldViolation[];
  expectedSchema?: ExpectedJsonSchema;
  requestId?: string;
  status?: Status;
  details?: Message[];
  cause?: unknown;
}

/**
 * A failed call, or a client-side check that failed. Branch on `code` and
 * `reason` (the `google.rpc.ErrorInfo` reason, e.g. `ITEM_NOT_FOUND`), never
 * on `message`.
 */
export class GeoperaError extends Error {
  /** gRPC status code (`Code.NOT_FOUND`, ...). */
  readonly code: Code;
  /** `google.rpc.ErrorInfo.reason`, e.g. `INVALID_ANALYTICS_PARAMS`; "" when none. */
  readonly reason: string;
  /** `google.rpc.ErrorInfo.domain` (`geopera.v1` for server errors). */
  readonly domain: string;
  /** `google.rpc.ErrorInfo.metadata`. */
  readonly metadata: Record<string, string>;
  /** `google.rpc.BadRequest` field violations. */
  readonly fieldViolations: FieldViolation[];
  /** `geopera.v1.ExpectedSchema`, sent with invalid analytics or job params. */
  readonly expectedSchema: ExpectedJsonSchema | undefined;
  /** The server's `x-request-id`; quote it when reporting a problem. */
  readonly requestId: string;
  /** The whole rich status, when the server sent one. */
  readonly status: Status | undefined;
  /** Every detail of the rich status that this client could decode. */
  readonly details: Message[];

  constructor(message: string, init: GeoperaErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code ?? Code.UNKNOWN;
    this.reason = init.reason ?? "";
    this.domain = init.domain ?? "";
    this.metadata = init.metadata ?? {};
    this.fieldViolations = init.fieldViolations ?? [];
    this.expectedSchema = init.expectedSchema;
    this.requestId = init.requestId ?? "";
    this.status = init.status;
    this.details = init.details ?? [];
  }

  /** `NOT_FOUND`, `INVALID_ARGUMENT`, ... */
  get codeName(): string {
    return Code[this.code] ?? String(this.code);
  }

  override toString(): string {
    let text = `${this.name}: ${this.codeName}`;
    if (this.reason) text += ` ${this.reason}`;
    text += `: ${this.message}`;
    if (this.fieldViolations.length) {
      text += ` [${this.fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ")}]`;
    }
    if (this.requestId) text += ` (request id ${this.requestId})`;
    return text;
  }
}

export class CancelledError extends GeoperaError {}
export class UnknownError extends GeoperaError {}
/** Fix the request: see `fieldViolations` and `expectedSchema`. */
export class InvalidArgumentError extends GeoperaError {}
export class DeadlineExceededError extends GeoperaError {}
export class NotFoundError extends GeoperaError {}
export class AlreadyExistsError extends GeoperaError {}
/** `MISSING_SCOPE`, `PROJECT_ACCESS_DENIED`, ... */
export class PermissionDeniedError extends GeoperaError {}
export class ResourceExhaustedError extends GeoperaError {}
/** `INSUFFICIENT_CREDITS`, `IDEMPOTENCY_KEY_REUSED`, `JOB_ALREADY_FINISHED`, ... */
export class FailedPreconditionError extends GeoperaError {}
/** `IDEMPOTENCY_KEY_IN_USE`: the first call with the key is still running; retry. */
export class AbortedError extends GeoperaError {}
export class OutOfRangeError extends GeoperaError {}
export class UnimplementedError extends GeoperaError {}
/** Quote `requestId` when reporting it. */
export class InternalError extends GeoperaError {}
/** Retried by the client where that is safe. */
export class UnavailableError extends GeoperaError {}
export class DataLossError extends GeoperaError {}
/** Missing, malformed, unknown or revoked token. */
export class UnauthenticatedError extends GeoperaError {}

const BY_CODE: Partial<Record<Code, new (message: string, init?: GeoperaErrorInit) => GeoperaError>> = {
  [Code.CANCELLED]: CancelledError,
  [Code.UNKNOWN]: UnknownError,
  [Code.INVALID_ARGUMENT]: InvalidArgumentError,
  [Code.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [Code.NOT_FOUND]: NotFoundError,
  [Code.ALREADY_EXISTS]: AlreadyExistsError,
  [Code.PERMISSION_DENIED]: PermissionDeniedError,
  [Code.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [Code.FAILED_PRECONDITION]: FailedPreconditionError,
  [Code.ABORTED]: AbortedError,
  [Code.OUT_OF_RANGE]: OutOfRangeError,
  [Code.UNIMPLEMENTED]: UnimplementedError,
  [Code.INTERNAL]: InternalError,
  [Code.UNAVAILABLE]: UnavailableError,
  [Code.DATA_LOSS]: DataLossError,
  [Code.UNAUTHENTICATED]: UnauthenticatedError,
};

/** The typed error of a status code and fields. */
export function makeError(message: string, init: GeoperaErrorInit = {}): GeoperaError {
  const cls = BY_CODE[init.code ?? Code.UNKNOWN] ?? GeoperaError;
  return new cls(message, init);
}

function firstString(metadata: Metadata | undefined, key: string): string {
  const value = metadata?.get(key)[0];
  if (value === undefined) return "";
  return typeof value === "string" ? value : value.toString("utf8");
}

/** Decodes `grpc-status-details-bin` into the rich status; undefined when absent or unparseable. */
export function richStatus(metadata: Metadata | undefined): Status | undefined {
  const value = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (value === undefined) return undefined;
  try {
    return fromBinary(StatusSchema, typeof value === "string" ? Buffer.from(value, "base64") : value);
  } catch {
    return undefined;
  }
}

/** Fields of a `GeoperaError` from a rich status (ErrorInfo, BadRequest, ExpectedSchema). */
export function parseRichStatus(status: Status): GeoperaErrorInit {
  const init: GeoperaErrorInit = { status, details: [], fieldViolations: [] };
  for (const any of status.details) {
    let detail: Message | undefined;
    try {
      detail = anyUnpack(any, registry);
    } catch {
      detail = undefined;
    }
    if (detail === undefined) continue;
    init.details!.push(detail);
    if (detail.$typeName === ErrorInfoSchema.typeName) {
      const info = detail as ErrorInfo;
      init.reason = info.reason;
      init.domain = info.domain;
      init.metadata = { ...info.metadata };
    } else if (detail.$typeName === BadRequestSchema.typeName) {
      const bad = detail as BadRequest;
      init.fieldViolations!.push(
        ...bad.fieldViolations.map((v) => ({ field: v.field, description: v.description, reason: v.reason })),
      );
    } else if (detail.$typeName === ExpectedSchemaSchema.typeName) {
      const schema = detail as ExpectedSchemaMessage;
      init.expectedSchema = { subject: schema.subject, jsonSchema: schema.jsonSchema ?? {} };
    }
  }
  return init;
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number";
}

/** The typed error of a failed grpc-js call (anything else is wrapped as UNKNOWN). */
export function errorFromGrpc(err: unknown): GeoperaError {
  if (err instanceof GeoperaError) return err;
  if (!isServiceError(err)) {
    return new UnknownError(err instanceof Error ? err.message : String(err), { cause: err });
  }
  const status = richStatus(err.metadata);
  const init: GeoperaErrorInit = status ? parseRichStatus(status) : {};
  init.code = err.code;
  init.cause = err;
  init.requestId = init.metadata?.["request_id"] || firstString(err.metadata, "x-request-id");
  // `details` is the status message as the server sent it (err.message adds
  // the code and is meant for logs).
  return makeError(err.details || status?.message || err.message, init);
}
