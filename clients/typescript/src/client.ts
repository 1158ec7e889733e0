// GeoperaClient: the KernelService over @grpc/grpc-js, with typed operations,
// typed errors, retries and a resumable job watch.

import { randomUUID } from "node:crypto";

import { create, isMessage, type JsonObject, type Message } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";

import type { ZonalStatsParams, ZonalStatsResult } from "./analytics.js";
import { Assets } from "./assets.js";
import { JobsWatch, type JobsWatchRequest } from "./jobs_watch.js";
import { Webhooks } from "./webhooks.js";
import { backoffMs, deserializer, readStream, serializer, sleep } from "./calls.js";
import {
  Code,
  errorFromGrpc,
  GeoperaError,
  InvalidArgumentError,
  UnavailableError,
  CancelledError,
} from "./errors.js";
import type { AnalyticsExecuteResult } from "./gen/geopera/v1/analytics_pb.js";
import type { ItemsListResult } from "./gen/geopera/v1/catalog_pb.js";
import {
  ExecuteRequestSchema,
  ExecuteResponseSchema,
  KernelService,
  WatchJobRequestSchema,
  WatchJobResponseSchema,
  type ExecuteRequest,
  type ExecuteResponse,
  type WatchJobRequest,
  type WatchJobResponse,
} from "./gen/geopera/v1/kernel_pb.js";
import {
  JobStatus,
  type CostEstimate,
  type DispatchResult,
  type Item,
  type Job,
  type JobLogEntry,
  type LogLevel,
} from "./gen/geopera/v1/resources_pb.js";
import { registry } from "./gen/index.js";
import { shape } from "./jsonview.js";
import {
  isSafeToRepeat,
  paramsTypeName,
  takesIdempotencyKey,
  type OperationName,
  type ParamsInit,
  type ResultOf,
} from "./operations.js";

export const VERSION = "0.1.0";

const EXECUTE_PATH = `/${KernelService.typeName}/${KernelService.method.execute.name}`;
const WATCH_JOB_PATH = `/${KernelService.typeName}/${KernelService.method.watchJob.name}`;
const TYPE_URL_PREFIX = "type.googleapis.com/";
// Reasons with which the server says it did not run the call at all, so even
// a write that is not safe to repeat may be sent again.
const NOT_PROCESSED_REASONS = new Set(["NOT_READY"]);

/** SUCCEEDED, FAILED and CANCELLED: a job never leaves them. */
export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set([
  JobStatus.SUCCEEDED,
  JobStatus.FAILED,
  JobStatus.CANCELLED,
]);

export function isTerminal(status: JobStatus | undefined): boolean {
  return status !== undefined && TERMINAL_STATUSES.has(status);
}

/** `SUCCEEDED`, `RUNNING`, ... */
export function jobStatusName(status: JobStatus): string {
  return JobStatus[status] ?? String(status);
}

/**
 * How a call that fails UNAVAILABLE is retried: exponential backoff with
 * jitter (the n-th delay is random in [d/2, d], d = min(maxBackoffMs,
 * initialBackoffMs * multiplier^(n-1))). A watch counts consecutive failures
 * without a new event.
 */
export interface RetryPolicy {
  /** Attempts of one logical call, 1 = no retry. */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 5, initialBackoffMs: 250, maxBackoffMs: 8000, multiplier: 2 };

export interface ClientOptions {
  /** Default: plaintext (the server's loopback default); pass `grpc.credentials.createSsl()` for TLS. */
  credentials?: grpc.ChannelCredentials;
  /** Deadline of each unary attempt in ms (default 30 000); `null` for none. */
  timeoutMs?: number | null;
  /** Retry policy for UNAVAILABLE, or `false` for none. */
  retry?: Partial<RetryPolicy> | false;
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

export interface CallOptions {
  /** Deadline of each attempt in ms (overrides the client's). */
  timeoutMs?: number | null;
  /**
   * `idempotency-key` of a spend operation (1-255 printable ASCII). The client
   * generates one per logical call when omitted, and every retry reuses it.
   */
  idempotencyKey?: string;
  /** Sent as `x-request-id` (the server echoes it and logs it). */
  requestId?: string;
  /** Cancels the call (it then fails CANCELLED). */
  signal?: AbortSignal;
  /**
   * `ExecuteRequest.validate_only` (AIP-163): check everything, change nothing.
   * A spend's result carries its `estimate` (and a job without an id);
   * `analytics.execute` answers `pixelsToRead`. No idempotency key is sent.
   */
  validateOnly?: boolean;
}

export interface WatchOptions {
  /** Overall deadline of the watch, resumptions included; default none. */
  timeoutMs?: number;
  /** Stops the watch: iteration ends without an error. */
  signal?: AbortSignal;
  requestId?: string;
}

/** A job as returned by `jobs.createAndDispatch`, with the key that made it. */
export interface DispatchedJob {
  job: Job;
  dispatch: DispatchResult | undefined;
  /** What the job holds (with `validateOnly`: would hold; the job then has no id). */
  estimate: CostEstimate | undefined;
  /** The `idempotency-key` sent: repeat the call with it to get this job back ("" when none was sent). */
  idempotencyKey: string;
}

/** A fresh idempotency key for one logical spend call. */
export function newIdempotencyKey(): string {
  return randomUUID();
}

function checkIdempotencyKey(key: string): void {
  if (!/^[\x20-\x7e]{1,255}$/.test(key)) {
    throw new InvalidArgumentError("idempotency key must be 1-255 printable ASCII characters", {
      code: Code.INVALID_ARGUMENT,
      reason: "INVALID_IDEMPOTENCY_KEY",
      fieldViolations: [{ field: "idempotency-key", description: "1-255 printable ASCII characters", reason: "" }],
    });
  }
}

const serializeExecute = serializer(ExecuteRequestSchema) as (m: ExecuteRequest) => Buffer;
const deserializeExecute = deserializer<ExecuteResponse>(ExecuteResponseSchema);
const serializeWatch = serializer(WatchJobRequestSchema) as (m: WatchJobRequest) => Buffer;
const deserializeWatch = deserializer<WatchJobResponse>(WatchJobResponseSchema);

/**
 * A job's events (`WatchJob`): the current snapshot first, then every change,
 * ending after the event that carries a terminal status. A dropped stream
 * (UNAVAILABLE, or an end before the terminal event) is resumed transparently
 * with `after_sequence = lastSequence`, so no event is lost or repeated.
 *
 *     for await (const event of client.watchJob(jobId)) console.log(event.eventType, event.job?.status);
 */
export class JobWatch implements AsyncIterable<WatchJobResponse> {
  /** Sequence of the latest event received (the `after_sequence` of a resume). */
  lastSequence: bigint;
  /** Streams re-opened after a drop. */
  resumes = 0;
  /** The latest job snapshot received. */
  job: Job | undefined;
  private call: grpc.ClientReadableStream<WatchJobResponse> | undefined;
  private stopped = false;

  constructor(
    private readonly client: GeoperaClient,
    readonly jobId: string,
    afterSequence: bigint | number = 0n,
    private readonly options: WatchOptions = {},
  ) {
    this.lastSequence = BigInt(afterSequence);
    options.signal?.addEventListener("abort", () => this.cancel(), { once: true });
  }

  /** Stops watching: the open stream is cancelled and iteration ends. */
  cancel(): void {
    this.stopped = true;
    this.call?.cancel();
  }

  /** Iterates to the end and returns the final job. */
  async final(): Promise<Job> {
    for await (const _ of this) {
      // consume
    }
    if (this.job === undefined) {
      throw new CancelledError("the watch was cancelled before any event", { code: Code.CANCELLED });
    }
    return this.job;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchJobResponse, void, undefined> {
    const policy = this.client.retryPolicy;
    const deadline = this.options.timeoutMs === undefined ? undefined : Date.now() + this.options.timeoutMs;
    let yielded = false;
    let failures = 0;
    while (!this.stopped) {
      const request = create(WatchJobRequestSchema, { jobId: this.jobId, afterSequence: this.lastSequence });
      const call = this.client.grpcClient.makeServerStreamRequest(
        WATCH_JOB_PATH,
        serializeWatch,
        deserializeWatch,
        request,
        this.client.metadata({ requestId: this.options.requestId }),
        deadline === undefined ? {} : { deadline },
      );
      this.call = call;
      let error: GeoperaError;
      try {
        let received = false;
        for await (const event of readStream(call)) {
          received = true;
          // After the first event, anything not newer was already delivered
          // (never expected; cheap insurance against a replaying server).
          if (yielded && event.sequence <= this.lastSequence) continue;
          if (event.sequence > this.lastSequence) this.lastSequence = event.sequence;
          yielded = true;
          failures = 0;
          this.job = event.job;
          yield event;
          if (isTerminal(event.job?.status)) return;
          if (this.stopped) return;
        }
        // The server ends a watch OK only for an ended job: nothing was newer.
        if (!received) return;
        error = new UnavailableError("the watch ended before the job did", {
          code: Code.UNAVAILABLE,
          reason: "STREAM_ENDED",
        });
      } catch (err) {
        if (this.stopped) return;
        error = errorFromGrpc(err);
      } finally {
        this.call = undefined;
      }
      // The server ends quiet watches (WATCH_IDLE): resuming them is routine, not a failure.
      failures = error.reason === "WATCH_IDLE" ? 1 : failures + 1;
      if (error.code !== Code.UNAVAILABLE || failures >= policy.maxAttempts) throw error;
      const delay = backoffMs(policy, failures);
      if (deadline !== undefined && Date.now() + delay >= deadline) throw error;
      this.resumes += 1;
      try {
        await sleep(delay, this.options.signal);
      } catch {
        return; // aborted
      }
    }
  }
}

/** `items.*` helpers. */
export class Items {
  constructor(private readonly client: GeoperaClient) {}

  /** `items.get`: one item with its assets. */
  async get(itemId: string, options?: CallOptions): Promise<Item> {
    const result = await this.client.execute("items.get", { itemId }, options);
    return result.item!;
  }

  /** `items.list`: one page of a project's items, ordered by (datetime, id). */
  list(params: ParamsInit<"items.list">, options?: CallOptions): Promise<ItemsListResult> {
    return this.client.execute("items.list", params, options);
  }

  /** Every item matching `params`, page after page. */
  async *iterate(params: ParamsInit<"items.list">, options?: CallOptions): AsyncGenerator<Item, void, undefined> {
    let pageToken = "";
    do {
      const page = await this.list({ ...params, pageToken }, options);
      yield* page.items;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }
}

/** `processing.*` helpers. */
export class Jobs {
  constructor(private readonly client: GeoperaClient) {}

  /**
   * `processing.create_and_dispatch`: creates a job (credits reserved) and
   * queues it for a worker in one transaction. Sends `idempotencyKey` (a fresh
   * one when omitted, returned with the job): repeating the call with the same
   * key and params returns the same job instead of paying twice.
   */
  async createAndDispatch(
    params: ParamsInit<"processing.create_and_dispatch">,
    options: CallOptions = {},
  ): Promise<DispatchedJob> {
    // A validate-only call records nothing under a key: none is made for it.
    const idempotencyKey = options.validateOnly ? options.idempotencyKey : (options.idempotencyKey ?? newIdempotencyKey());
    const result = await this.client.execute("processing.create_and_dispatch", params, {
      ...options,
      idempotencyKey,
    });
    return { job: result.job!, dispatch: result.dispatch, estimate: result.estimate, idempotencyKey: idempotencyKey ?? "" };
  }

  /**
   * `processing.jobs.resubmit`: runs a finished job again as a new dispatched
   * job (its own hold; `resubmittedFrom` names the original), `inputParams`
   * merged over the original's (null removes a key). Sends an idempotency
   * key (a fresh one when omitted), as `createAndDispatch` does.
   */
  async resubmit(
    jobId: string,
    inputParams: ParamsInit<"processing.jobs.resubmit">["inputParams"] = undefined,
    options: CallOptions = {},
  ): Promise<DispatchedJob> {
    const idempotencyKey = options.validateOnly ? options.idempotencyKey : (options.idempotencyKey ?? newIdempotencyKey());
    const result = await this.client.execute("processing.jobs.resubmit", { jobId, inputParams }, {
      ...options,
      idempotencyKey,
    });
    return { job: result.job!, dispatch: result.dispatch, estimate: result.estimate, idempotencyKey: idempotencyKey ?? "" };
  }

  /**
   * `processing.create_batch`: up to 1,000 jobs of a project in one call and
   * one idempotency key (a fresh one when omitted). `jobs` and `errors` are
   * index-aligned with `requests`; with `allOrNothing` a failing request or a
   * balance short of the total fails the call and creates nothing.
   */
  async createBatch(
    params: ParamsInit<"processing.create_batch">,
    options: CallOptions = {},
  ): Promise<ResultOf<"processing.create_batch"> & { idempotencyKey: string }> {
    const idempotencyKey = options.validateOnly ? options.idempotencyKey : (options.idempotencyKey ?? newIdempotencyKey());
    const result = await this.client.execute("processing.create_batch", params, { ...options, idempotencyKey });
    return Object.assign(result, { idempotencyKey: idempotencyKey ?? "" });
  }

  /** `processing.jobs.get`. */
  async get(jobId: string, options?: CallOptions): Promise<Job> {
    const result = await this.client.execute("processing.jobs.get", { jobId }, options);
    return result.job!;
  }

  /**
   * `processing.jobs.logs`: every log record of the job (written by its worker), oldest
   * first, page after page; `minLevel` keeps that level and worse.
   */
  async *logs(
    jobId: string,
    params: { minLevel?: LogLevel; pageSize?: number } = {},
    options?: CallOptions,
  ): AsyncGenerator<JobLogEntry, void, undefined> {
    let pageToken = "";
    do {
      const request: ParamsInit<"processing.jobs.logs"> = { ...params, jobId, pageToken };
      const page = await this.client.execute("processing.jobs.logs", request, options);
      yield* page.entries;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** `processing.jobs.cancel`: held credits are released. */
  async cancel(jobId: string, reason = "", options?: CallOptions): Promise<Job> {
    const result = await this.client.execute("processing.jobs.cancel", { jobId, reason }, options);
    return result.job!;
  }

  /**
   * The events of many jobs on one `WatchJobs` stream (a batch's, or a
   * project's unfinished ones); see `JobsWatch`.
   */
  watchMany(
    request: JobsWatchRequest,
    afterSequences: Record<string, bigint | number> = {},
    options?: WatchOptions,
  ): JobsWatch {
    return new JobsWatch(this.client, request, afterSequences, options);
  }

  /** The job's events; see `JobWatch`. */
  watch(jobId: string, afterSequence: bigint | number = 0n, options?: WatchOptions): JobWatch {
    return new JobWatch(this.client, jobId, afterSequence, options);
  }

  /** Watches the job until it ends and returns its final state (which may be FAILED). */
  wait(jobId: string, options?: WatchOptions): Promise<Job> {
    return this.watch(jobId, 0n, options).final();
  }
}

/** `analytics.*` helpers. */
export class Analytics {
  constructor(private readonly client: GeoperaClient) {}

  /**
   * `analytics.execute`: runs one analytics method with JSON params. Invalid
   * params fail `InvalidArgumentError` (`INVALID_ANALYTICS_PARAMS`) with
   * `fieldViolations` and the method's `expectedSchema`.
   */
  async execute(method: string, params: JsonObject | object, options?: CallOptions): Promise<AnalyticsExecuteResult> {
    const result = await this.client.execute(
      "analytics.execute",
      { operation: method, params: params as JsonObject },
      options,
    );
    // A Struct does not keep key order: give the result its method's (the server's HTTP answer has it too).
    const schema = await this.outputSchema(method, options);
    if (schema && result.result) result.result = shape(result.result, schema) as JsonObject;
    return result;
  }

  /**
   * The output JSON Schema of `method` from `analytics.operations.list`
   * (loaded once per client); undefined when the server does not list it or
   * the list cannot be read.
   */
  async outputSchema(method: string, options?: CallOptions): Promise<JsonObject | undefined> {
    if (!this.schemas) {
      this.schemas = this.client.execute("analytics.operations.list", {}, options).then(
        (listed) => new Map(listed.operations.map((op) => [op.name, op.outputSchema ?? {}])),
        () => {
          this.schemas = undefined; // try again on the next call
          return new Map<string, JsonObject>();
        },
      );
    }
    return (await this.schemas).get(method);
  }

  private schemas: Promise<Map<string, JsonObject>> | undefined;

  /**
   * `analytics.submit`: runs the method as a job in `projectId` (no
   * synchronous pixel limit; no credits). Follow it with `client.jobs.wait`;
   * once SUCCEEDED, `job.outputArtifacts[0]` (key `result`) is the JSON the
   * synchronous call answers (`client.assets.download`), then the method's
   * files. Sends `idempotencyKey` (a fresh one when omitted): a repeat with the
   * same key and params answers the same job.
   */
  async submit(method: string, params: JsonObject | object, projectId: string, options: CallOptions = {}): Promise<Job> {
    const idempotencyKey = options.validateOnly ? options.idempotencyKey : (options.idempotencyKey ?? newIdempotencyKey());
    const result = await this.client.execute(
      "analytics.submit",
      { operation: method, params: params as JsonObject, projectId },
      { ...options, idempotencyKey },
    );
    return result.job!;
  }

  /** `zonal_stats`: statistics of a band or index inside one or more zones. */
  async zonalStats(params: ZonalStatsParams, options?: CallOptions): Promise<ZonalStatsResult> {
    const result = await this.execute("zonal_stats", params, options);
    return result.result as unknown as ZonalStatsResult;
  }
}

/**
 * A client of `geopera.v1.KernelService`.
 *
 *     const client = new GeoperaClient("127.0.0.1:50051", token);
 *     const page = await client.items.list({ projectId: "demo", pageSize: 10 });
 *     const { job } = await client.jobs.createAndDispatch({ projectId: "demo", jobTypeId: "bathymetry", inputParams });
 *     for await (const event of client.watchJob(job.id)) console.log(event.eventType);
 *     client.close();
 */
export class GeoperaClient {
  readonly target: string;
  readonly grpcClient: grpc.Client;
  readonly retryPolicy: RetryPolicy;
  readonly timeoutMs: number | null;
  readonly items: Items;
  readonly jobs: Jobs;
  readonly analytics: Analytics;
  /** Downloads (`DownloadAsset`) and signed URLs (`assets.sign`). */
  readonly assets: Assets;
  /** Webhooks (`webhooks.*`). */
  readonly webhooks: Webhooks;
  private readonly token: string;

  constructor(target: string, token: string, options: ClientOptions = {}) {
    this.target = target;
    this.token = token;
    this.timeoutMs = options.timeoutMs === undefined ? 30_000 : options.timeoutMs;
    this.retryPolicy = options.retry === false ? { ...DEFAULT_RETRY, maxAttempts: 1 } : { ...DEFAULT_RETRY, ...options.retry };
    if (!(this.retryPolicy.maxAttempts >= 1)) throw new RangeError("retry.maxAttempts must be >= 1");
    this.grpcClient = new grpc.Client(target, options.credentials ?? grpc.credentials.createInsecure(), {
      "grpc.primary_user_agent": `geopera-ts/${VERSION}`,
      ...options.channelOptions,
    });
    this.items = new Items(this);
    this.jobs = new Jobs(this);
    this.analytics = new Analytics(this);
    this.assets = new Assets(this);
    this.webhooks = new Webhooks(this);
  }

  /** Closes the channel; calls in flight fail. */
  close(): void {
    this.grpcClient.close();
  }

  /** The call metadata: token, and idempotency key / request id when given. */
  metadata(options: { idempotencyKey?: string; requestId?: string } = {}): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token) metadata.set("authorization", `Bearer ${this.token}`);
    if (options.idempotencyKey !== undefined) metadata.set("idempotency-key", options.idempotencyKey);
    if (options.requestId) metadata.set("x-request-id", options.requestId);
    return metadata;
  }

  /** The typed params of `operation` packed as `Any` (type by the naming rule). */
  packParams(operation: string, params: unknown): Any {
    const typeName = paramsTypeName(operation);
    if (params === undefined || params === null) {
      const schema = registry.getMessage(typeName);
      if (schema) return anyPack(schema, create(schema));
      return create(AnySchema, { typeUrl: TYPE_URL_PREFIX + typeName });
    }
    if (isMessage(params)) {
      if (isMessage(params, AnySchema)) return params;
      const schema = registry.getMessage(params.$typeName);
      if (!schema) throw new TypeError(`unknown message type ${params.$typeName}`);
      return anyPack(schema, params);
    }
    const schema = registry.getMessage(typeName);
    if (!schema) {
      throw new InvalidArgumentError(
        `this client does not know ${typeName} (operation ${JSON.stringify(operation)}); ` +
          "pass a message or an Any, or regenerate the client",
        { code: Code.INVALID_ARGUMENT, reason: "UNKNOWN_OPERATION" },
      );
    }
    return anyPack(schema, create(schema, params as never));
  }

  /**
   * Runs one operation. `params` is its params message or a plain init object
   * (camelCase fields) of it, packed as `Any` by the contract's naming rule
   * (`items.list` -> `geopera.v1.ItemsListParams`); the result is the unpacked
   * result message (`geopera.v1.ItemsListResult`).
   *
   * Operations that honour `idempotency-key` (spends, `analytics.execute`)
   * send one (yours, or a fresh one) that every retry of this call reuses. UNAVAILABLE is retried when the call is
   * safe to repeat. Failures throw a `GeoperaError` subclass.
   */
  execute<O extends OperationName>(operation: O, params?: ParamsInit<O>, options?: CallOptions): Promise<ResultOf<O>>;
  execute(operation: string, params?: Message | object, options?: CallOptions): Promise<Message>;
  async execute(operation: string, params?: unknown, options: CallOptions = {}): Promise<Message> {
    const validateOnly = options.validateOnly ?? false;
    const request = create(ExecuteRequestSchema, {
      operation,
      params: this.packParams(operation, params),
      validateOnly,
    });
    let idempotencyKey = options.idempotencyKey;
    if (idempotencyKey === undefined && takesIdempotencyKey(operation) && !validateOnly) {
      idempotencyKey = newIdempotencyKey();
    }
    if (idempotencyKey !== undefined) checkIdempotencyKey(idempotencyKey);
    const metadata = this.metadata({ idempotencyKey, requestId: options.requestId });
    const timeoutMs = options.timeoutMs === undefined ? this.timeoutMs : options.timeoutMs;
    const safe = validateOnly || isSafeToRepeat(operation);
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await this.unary(request, metadata, timeoutMs, options.signal);
        return this.unpackResult(response);
      } catch (err) {
        const error = errorFromGrpc(err);
        const retryable =
          error.code === Code.UNAVAILABLE && (safe || NOT_PROCESSED_REASONS.has(error.reason)) && !options.signal?.aborted;
        if (!retryable || attempt >= this.retryPolicy.maxAttempts) throw error;
        await sleep(backoffMs(this.retryPolicy, attempt), options.signal);
      }
    }
  }

  /** The job's events from `afterSequence` on (see `JobWatch`). */
  watchJob(jobId: string, afterSequence: bigint | number = 0n, options?: WatchOptions): JobWatch {
    return new JobWatch(this, jobId, afterSequence, options);
  }

  private unpackResult(response: ExecuteResponse): Message {
    const any = response.result;
    if (any === undefined) {
      throw new GeoperaError(`operation ${response.operation} returned no result`, { code: Code.INTERNAL });
    }
    // A result type this client does not know (a newer server) comes back as the Any.
    return anyUnpack(any, registry) ?? any;
  }

  private unary(
    request: ExecuteRequest,
    metadata: grpc.Metadata,
    timeoutMs: number | null,
    signal: AbortSignal | undefined,
  ): Promise<ExecuteResponse> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new CancelledError("cancelled", { code: Code.CANCELLED }));
      const callOptions: grpc.CallOptions = timeoutMs === null ? {} : { deadline: Date.now() + timeoutMs };
      const onAbort = () => call.cancel();
      const call = this.grpcClient.makeUnaryRequest(
        EXECUTE_PATH,
        serializeExecute,
        deserializeExecute,
        request,
        metadata,
        callOptions,
        (err, response) => {
          signal?.removeEventListener("abort", onAbort);
          if (err) reject(err);
          else resolve(response!);
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}
