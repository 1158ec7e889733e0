// `client.assets`: item assets and analytics artifacts as bytes
// (`KernelService/DownloadAsset`, resumed after a drop, SHA-256 verified) and
// as signed HTTP URLs (`assets.sign`).

import { createHash } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";

import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { backoffMs, deserializer, readStream, serializer, sleep } from "./calls.js";
import type { CallOptions, GeoperaClient } from "./client.js";
import { Code, DataLossError, errorFromGrpc, GeoperaError, InternalError, UnavailableError } from "./errors.js";
import {
  DownloadAssetRequestSchema,
  DownloadAssetResponseSchema,
  KernelService,
  type DownloadAssetRequest,
  type DownloadAssetResponse,
} from "./gen/geopera/v1/kernel_pb.js";

const DOWNLOAD_PATH = `/${KernelService.typeName}/${KernelService.method.downloadAsset.name}`;
const serializeDownload = serializer(DownloadAssetRequestSchema) as (m: DownloadAssetRequest) => Buffer;
const deserializeDownload = deserializer<DownloadAssetResponse>(DownloadAssetResponseSchema);

/**
 * What to download: a resource name (`items/{item_id}/assets/{asset_key}` or
 * `artifacts/{artifact_id}`, an asset's `href`), or an `Asset` / `Artifact`
 * (its `href`, and its `sha256` checked too).
 */
export type DownloadTarget = string | { href: string; sha256?: string };

export interface DownloadOptions {
  /** Overall deadline in ms, resumptions included; default none. */
  timeoutMs?: number;
  /** Cancels the download (it then fails CANCELLED; a file download leaves no file). */
  signal?: AbortSignal;
  requestId?: string;
  /** Expected lower-case hex SHA-256, besides the one the server announces. */
  sha256?: string;
  /** Called after each chunk with the bytes received so far and the total. */
  onProgress?: (received: number, total: number) => void;
}

/** What a download received, verified. */
export interface DownloadResult {
  resourceName: string;
  sizeBytes: number;
  /** Lower-case hex SHA-256 of the bytes received (equal to the server's). */
  sha256: string;
  mediaType: string;
  /** Streams re-opened at the bytes received after a drop. */
  resumes: number;
}

/** What `sign` returns. */
export interface SignedUrl {
  /** Absolute HTTP URL of the resource with its signature in the query: no header needed. */
  url: string;
  /** When the URL stops working. */
  expireTime: Date;
}

function resolveTarget(target: DownloadTarget, sha256: string | undefined): { name: string; expected: string[] } {
  const name = typeof target === "string" ? target : target.href;
  if (!name) throw new TypeError("the download target has no href");
  const expected = [sha256, typeof target === "string" ? undefined : target.sha256];
  return { name, expected: expected.filter((s): s is string => !!s).map((s) => s.toLowerCase()) };
}

function checksumError(message: string, reason: string): DataLossError {
  return new DataLossError(message, { code: Code.DATA_LOSS, reason });
}

/** A grpc-js call failure (or one of ours); anything else (a file write) is not retried. */
function isCallError(err: unknown): boolean {
  return err instanceof GeoperaError || (err instanceof Error && typeof (err as { code?: unknown }).code === "number");
}

/** Item assets and analytics artifacts: `client.assets.download(item.assets["data"])`. */
export class Assets {
  constructor(private readonly client: GeoperaClient) {}

  /**
   * `assets.sign`: a URL that downloads the resource over HTTP with no header
   * until it expires, for curl, a browser, GDAL (`/vsicurl/`) or QGIS. Anyone
   * holding it can read the resource until `expireTime`. `ttlSeconds`:
   * 1..604800 (7 days); omitted or 0, the server's default (1 hour).
   */
  async sign(target: DownloadTarget, options: CallOptions & { ttlSeconds?: number } = {}): Promise<SignedUrl> {
    const { ttlSeconds, ...call } = options;
    const { name } = resolveTarget(target, undefined);
    const result = await this.client.execute("assets.sign", { resourceName: name, ttlSeconds: BigInt(ttlSeconds ?? 0) }, call);
    if (!result.expireTime) throw new InternalError("assets.sign answered no expire_time", { code: Code.INTERNAL });
    return { url: result.url, expireTime: timestampDate(result.expireTime) };
  }

  /** The whole resource in memory (fine for artifacts and small assets; see `downloadToFile`). */
  async download(target: DownloadTarget, options: DownloadOptions = {}): Promise<DownloadResult & { data: Buffer }> {
    const chunks: Uint8Array[] = [];
    const result = await this.stream(target, options, (chunk) => void chunks.push(chunk));
    return { ...result, data: Buffer.concat(chunks) };
  }

  /**
   * Writes the resource to `path`: into `<path>.part`, renamed once complete
   * and verified, so a failed or cancelled download leaves no file behind.
   */
  async downloadToFile(
    target: DownloadTarget,
    path: string,
    options: DownloadOptions = {},
  ): Promise<DownloadResult & { path: string }> {
    const part = `${path}.part`;
    const handle = await open(part, "w");
    try {
      const result = await this.stream(target, options, async (chunk) => {
        await handle.write(chunk);
      });
      await handle.close();
      await rename(part, path);
      return { ...result, path };
    } catch (err) {
      await handle.close().catch(() => undefined);
      await rm(part, { force: true });
      throw err;
    }
  }

  /** `DownloadAsset` into `write`, resuming at the bytes received after UNAVAILABLE. */
  private async stream(
    target: DownloadTarget,
    options: DownloadOptions,
    write: (chunk: Uint8Array) => unknown,
  ): Promise<DownloadResult> {
    const { name, expected } = resolveTarget(target, options.sha256);
    const policy = this.client.retryPolicy;
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    const digest = createHash("sha256");
    let header: { total: bigint; sha256: string; mediaType: string } | undefined;
    let offset = 0n;
    let resumes = 0;
    let failures = 0;
    for (;;) {
      const call = this.client.grpcClient.makeServerStreamRequest(
        DOWNLOAD_PATH,
        serializeDownload,
        deserializeDownload,
        create(DownloadAssetRequestSchema, { resourceName: name, readOffset: offset }),
        this.client.metadata({ requestId: options.requestId }),
        deadline === undefined ? {} : { deadline },
      );
      const onAbort = () => call.cancel();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      let error: GeoperaError;
      try {
        let first = true;
        for await (const message of readStream(call)) {
          if (first && header === undefined) {
            header = { total: message.totalSize, sha256: message.sha256, mediaType: message.mediaType };
            const other = expected.find((sha) => header!.sha256 && sha !== header!.sha256);
            if (other) throw checksumError(`${name} has sha256 ${header.sha256}, expected ${other}`, "CHECKSUM_MISMATCH");
          } else if (first && (message.totalSize !== header!.total || message.sha256 !== header!.sha256)) {
            throw checksumError(`${name} changed while it was downloaded`, "CONTENT_CHANGED");
          }
          first = false;
          if (message.offset !== offset) {
            throw new InternalError(`chunk at offset ${message.offset}, expected ${offset}`, {
              code: Code.INTERNAL,
              reason: "UNEXPECTED_OFFSET",
            });
          }
          if (message.data.length > 0) {
            await write(message.data);
            digest.update(message.data);
            offset += BigInt(message.data.length);
            failures = 0;
          }
          options.onProgress?.(Number(offset), Number(header!.total));
        }
        if (header !== undefined && offset >= header.total) {
          return this.verified(name, header, offset, digest.digest("hex"), expected, resumes);
        }
        error = new UnavailableError("the download ended early", { code: Code.UNAVAILABLE, reason: "STREAM_ENDED" });
      } catch (err) {
        if (!isCallError(err)) throw err;
        error = errorFromGrpc(err);
      } finally {
        options.signal?.removeEventListener("abort", onAbort);
      }
      failures += 1;
      if (error.code !== Code.UNAVAILABLE || failures >= policy.maxAttempts || options.signal?.aborted) throw error;
      const delay = backoffMs(policy, failures);
      if (deadline !== undefined && Date.now() + delay >= deadline) throw error;
      resumes += 1;
      await sleep(delay, options.signal);
    }
  }

  private verified(
    name: string,
    header: { total: bigint; sha256: string; mediaType: string },
    offset: bigint,
    sha256: string,
    expected: string[],
    resumes: number,
  ): DownloadResult {
    if (offset !== header.total) {
      throw checksumError(`${name}: got ${offset} of ${header.total} bytes`, "INCOMPLETE");
    }
    for (const want of [header.sha256, ...expected]) {
      if (want && want !== sha256) throw checksumError(`${name}: received sha256 ${sha256}, expected ${want}`, "CHECKSUM_MISMATCH");
    }
    return { resourceName: name, sizeBytes: Number(offset), sha256, mediaType: header.mediaType, resumes };
  }
}
