// WatchJobs: the events of many jobs (a batch's, or a project's) on one
// stream, resumed per job after a drop.

import { create } from "@bufbuild/protobuf";

import { backoffMs, deserializer, readStream, serializer, sleep } from "./calls.js";
import type { GeoperaClient, WatchOptions } from "./client.js";
import { Code, errorFromGrpc, type GeoperaError } from "./errors.js";
import {
  KernelService,
  WatchJobResponseSchema,
  WatchJobsRequestSchema,
  type WatchJobResponse,
  type WatchJobsRequest,
} from "./gen/geopera/v1/kernel_pb.js";
import type { JobStatus } from "./gen/geopera/v1/resources_pb.js";

const WATCH_JOBS_PATH = `/${KernelService.typeName}/${KernelService.method.watchJobs.name}`;
const serializeWatchJobs = serializer(WatchJobsRequestSchema) as (m: WatchJobsRequest) => Buffer;
const deserializeWatchJobs = deserializer<WatchJobResponse>(WatchJobResponseSchema);

/** What `WatchJobs` follows: `batchId`, or `projectId` with `status` / `jobTypeId`. */
export interface JobsWatchRequest {
  projectId?: string;
  batchId?: string;
  status?: JobStatus;
  jobTypeId?: string;
}

/**
 * The events of many jobs (`WatchJobs`): each job's snapshot, then every
 * change, the stream ending once every job of the set has ended. A dropped
 * stream (UNAVAILABLE) is resumed with `afterSequences` (the latest sequence
 * seen per job), so no event is lost or repeated.
 *
 *     for await (const event of client.jobs.watchMany({ batchId })) console.log(event.job?.id, event.eventType);
 */
export class JobsWatch implements AsyncIterable<WatchJobResponse> {
  /** Job id -> the latest sequence received (the resume point). */
  readonly afterSequences: Map<string, bigint>;
  /** Streams re-opened after a drop. */
  resumes = 0;
  private call: { cancel(): void } | undefined;
  private stopped = false;

  constructor(
    private readonly client: GeoperaClient,
    private readonly request: JobsWatchRequest,
    afterSequences: Record<string, bigint | number> = {},
    private readonly options: WatchOptions = {},
  ) {
    this.afterSequences = new Map(Object.entries(afterSequences).map(([id, s]) => [id, BigInt(s)]));
    options.signal?.addEventListener("abort", () => this.cancel(), { once: true });
  }

  /** Stops watching: the open stream is cancelled and iteration ends. */
  cancel(): void {
    this.stopped = true;
    this.call?.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchJobResponse, void, undefined> {
    const policy = this.client.retryPolicy;
    const deadline = this.options.timeoutMs === undefined ? undefined : Date.now() + this.options.timeoutMs;
    let failures = 0;
    while (!this.stopped) {
      const request = create(WatchJobsRequestSchema, {
        projectId: this.request.projectId ?? "",
        batchId: this.request.batchId ?? "",
        status: this.request.status,
        jobTypeId: this.request.jobTypeId ?? "",
        afterSequences: Object.fromEntries(this.afterSequences),
      });
      const call = this.client.grpcClient.makeServerStreamRequest(
        WATCH_JOBS_PATH,
        serializeWatchJobs,
        deserializeWatchJobs,
        request,
        this.client.metadata({ requestId: this.options.requestId }),
        deadline === undefined ? {} : { deadline },
      );
      this.call = call;
      let error: GeoperaError;
      try {
        for await (const event of readStream(call)) {
          const jobId = event.job?.id ?? "";
          const seen = this.afterSequences.get(jobId) ?? 0n;
          if (seen > 0n && event.sequence <= seen) continue; // already delivered (cheap insurance)
          this.afterSequences.set(jobId, event.sequence);
          failures = 0;
          yield event;
          if (this.stopped) return;
        }
        return; // the server ends WatchJobs OK once every job of the set has ended
      } catch (err) {
        if (this.stopped) return;
        error = errorFromGrpc(err);
      } finally {
        this.call = undefined;
      }
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
