// integration-status client: a tiny wrapper over fetch and EventSource for the three endpoints.
// Plain ES module, no dependencies, no build step; the types are in integration-status.d.ts beside it.
// The same file is served with the status bar page (integration_status/web/static/); a test keeps them equal.

export const PROVIDERS = ["sanity", "github", "vercel", "supabase"];
export const EVENT_TYPES = ["status:update", "deploy:started", "deploy:finished", "github:push", "sanity:webhook"];
/** The frame the server sends instead of a stream when it is over its connection caps. */
export const OVERLOADED_EVENT = "overloaded";

/** A fresh Idempotency-Key: one per user intent (one click), never reused for a different request. */
export function newIdempotencyKey() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export class IntegrationStatusClient {
  /** @param {import("./integration-status").ClientOptions} [options] */
  constructor(options = {}) {
    this.baseUrl = (options.baseUrl ?? "/api/integrations").replace(/\/$/, "");
    this.headers = options.headers ?? {};
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** GET /status. With `etag`, a 304 answers `{notModified: true}` and the caller keeps what it has. */
  async status(projectId, { etag, signal } = {}) {
    const headers = { Accept: "application/json", ...this.headers };
    if (etag) headers["If-None-Match"] = etag;
    const res = await this.fetch(`${this.baseUrl}/status?projectId=${encodeURIComponent(projectId)}`, {
      headers, cache: "no-store", signal,
    });
    if (res.status === 304) return { notModified: true, etag: res.headers.get("ETag") ?? etag ?? null };
    const body = await res.json();
    if (!res.ok) throw new IntegrationStatusError(res.status, body.error);
    return { notModified: false, etag: res.headers.get("ETag"), envelope: body };
  }

  /** POST /actions with a fresh Idempotency-Key (or the one given, to retry the same intent). */
  async act(request, { idempotencyKey = newIdempotencyKey(), signal } = {}) {
    const res = await this.fetch(`${this.baseUrl}/actions`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey, ...this.headers },
      body: JSON.stringify(request),
      signal,
    });
    const body = await res.json();
    return { status: res.status, idempotencyKey, replayed: res.headers.get("Idempotent-Replayed") === "true", body };
  }

  /**
   * GET /events as an EventSource. The browser reconnects by itself (sending Last-Event-ID); when it gives
   * up (the server answered with an error during a restart), this reopens the stream with `lastEventId`
   * in the query, backing off up to 30 s, so no event in the server's buffer is missed.
   */
  events(projectId, { onEvent = () => {}, onStatus = () => {}, query = {}, EventSourceImpl } = {}) {
    const Source = EventSourceImpl ?? globalThis.EventSource;
    const stream = { source: null, lastEventId: null, closed: false, reconnects: 0, close() {} };
    let delay = 1000;
    let timer = null;
    const open = () => {
      const params = new URLSearchParams({ projectId, ...query });
      if (stream.lastEventId) params.set("lastEventId", stream.lastEventId);
      const source = new Source(`${this.baseUrl}/events?${params}`);
      stream.source = source;
      source.onopen = () => { delay = 1000; onStatus("open"); };
      source.onerror = () => {
        if (stream.closed) return;
        if (source.readyState === 2) { // CLOSED: the browser will not retry by itself
          onStatus("closed");
          timer = setTimeout(() => { stream.reconnects += 1; open(); }, delay);
          delay = Math.min(delay * 2, 30_000);
        } else {
          onStatus("reconnecting");
        }
      };
      // Over the server's connection caps: one `overloaded` frame (with `retry:`), then the stream ends and
      // the browser reconnects after that delay by itself. (Not `error`: that name is EventSource's own.)
      source.addEventListener(OVERLOADED_EVENT, () => onStatus("overloaded"));
      for (const type of EVENT_TYPES) {
        source.addEventListener(type, (message) => {
          if (message.lastEventId) stream.lastEventId = message.lastEventId;
          onEvent(JSON.parse(message.data), message.lastEventId || null);
        });
      }
    };
    stream.close = () => { stream.closed = true; clearTimeout(timer); stream.source?.close(); };
    open();
    return stream;
  }
}

export class IntegrationStatusError extends Error {
  constructor(status, error) {
    super(error?.message ?? `HTTP ${status}`);
    this.name = "IntegrationStatusError";
    this.status = status;
    this.error = error ?? { code: "unknown", message: `HTTP ${status}` };
  }
}
