// Internal helpers of the client's calls: backoff, cancellable sleep,
// (de)serializers for grpc-js and a pull reader of server streams.

import { fromBinary, toBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";

import type { RetryPolicy } from "./client.js";
import { CancelledError, Code } from "./errors.js";

export function backoffMs(policy: RetryPolicy, failures: number): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** (failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new CancelledError("cancelled", { code: Code.CANCELLED }));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new CancelledError("cancelled", { code: Code.CANCELLED }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export function serializer<D extends DescMessage>(schema: D) {
  return (message: Message) => Buffer.from(toBinary(schema, message as never));
}

export function deserializer<T>(schema: DescMessage) {
  return (bytes: Buffer) => fromBinary(schema, bytes) as T;
}


/** Pulls the messages of a server stream; cancels the call when abandoned. */
export async function* readStream<T>(call: grpc.ClientReadableStream<T>): AsyncGenerator<T, void, undefined> {
  const queue: T[] = [];
  let done = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  call.on("data", (message: T) => {
    queue.push(message);
    notify();
  });
  // Stays attached for the call's lifetime: grpc-js emits `error` (CANCELLED)
  // when an abandoned call is cancelled below.
  call.on("error", (err: unknown) => {
    if (!done) {
      done = true;
      failure = err;
    }
    notify();
  });
  call.on("end", () => {
    done = true;
    notify();
  });
  try {
    for (;;) {
      if (queue.length > 0) {
        yield queue.shift() as T;
      } else if (done) {
        if (failure !== undefined) throw failure;
        return;
      } else {
        await new Promise<void>((resolve) => (wake = resolve));
      }
    }
  } finally {
    call.cancel();
  }
}
