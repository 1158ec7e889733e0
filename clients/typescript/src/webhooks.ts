// `client.webhooks`: a project's job events POSTed to a URL, signed as
// Standard Webhooks (verify them with the `standardwebhooks` npm package).

import type { CallOptions, GeoperaClient } from "./client.js";
import type { Webhook, WebhookAttempt, WebhooksCreateResult } from "./gen/geopera/v1/webhooks_pb.js";

/** The terminal job events: what a hook gets when `eventTypes` is omitted. */
export const TERMINAL_JOB_EVENTS = ["job.succeeded", "job.failed", "job.cancelled"];

export class Webhooks {
  constructor(private readonly client: GeoperaClient) {}

  /** `webhooks.create`: the hook and its `secret` (returned this once: keep it). */
  create(projectId: string, url: string, eventTypes: string[] = TERMINAL_JOB_EVENTS, options?: CallOptions): Promise<WebhooksCreateResult> {
    return this.client.execute("webhooks.create", { projectId, url, eventTypes }, options);
  }

  /** `webhooks.list`: every hook of the project, oldest first (all pages). */
  async list(projectId: string, options?: CallOptions): Promise<Webhook[]> {
    const hooks: Webhook[] = [];
    let pageToken = "";
    do {
      const page = await this.client.execute("webhooks.list", { projectId, pageSize: 1000, pageToken }, options);
      hooks.push(...page.webhooks);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return hooks;
  }

  /** `webhooks.delete`: nothing more is sent to the hook. */
  async delete(webhookId: string, options?: CallOptions): Promise<Webhook> {
    return (await this.client.execute("webhooks.delete", { webhookId }, options)).webhook!;
  }

  /** `webhooks.test`: sends a `webhook.test` message; its `webhook-id`. */
  async test(webhookId: string, options?: CallOptions): Promise<string> {
    return (await this.client.execute("webhooks.test", { webhookId }, options)).messageId;
  }

  /** `webhooks.deliveries.list`: the newest `pageSize` attempts of the hook's delivery log. */
  async deliveries(webhookId: string, pageSize = 100, options?: CallOptions): Promise<WebhookAttempt[]> {
    return (await this.client.execute("webhooks.deliveries.list", { webhookId, pageSize }, options)).attempts;
  }
}
