// Types of the integration-status JSON contract (the OpenAPI document at {prefix}/openapi.json) and of the
// client in integration-status.js. Optional fields are omitted on the wire, never null.

export type ProviderKey = "sanity" | "github" | "vercel" | "supabase";
export type StatusValue = "connected" | "warning" | "error" | "disconnected";
export type ProblemCode = "oauth_revoked" | "rate_limited" | "timeout" | "unknown";
export type ErrorCode =
  | ProblemCode
  | "invalid_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "idempotency_conflict"
  | "idempotency_mismatch";

export interface Problem {
  code: ProblemCode;
  hint?: string;
}

export interface Action {
  id: string;
  label: string;
  can: boolean;
  reason?: string;
}

export interface IntegrationStatus {
  key: ProviderKey;
  status: StatusValue;
  summary?: string;
  updatedAt: string;
  stale?: true;
  problem?: Problem;
  actions?: Action[];
}

export interface StatusEnvelope {
  projectId: string;
  items: IntegrationStatus[];
  hash: string;
}

export interface ActionRequest {
  projectId: string;
  provider: ProviderKey;
  action: string;
  payload?: unknown;
}

export interface ApiError {
  code: ErrorCode;
  message: string;
  hint?: string;
  retryAfter?: number;
}

export interface ErrorResponse {
  error: ApiError;
}

export interface ActionResponse {
  success: boolean;
  operationId?: string;
  url?: string;
  error?: ApiError;
}

export interface DeployStartedEvent {
  type: "deploy:started";
  provider: "vercel";
  projectId: string;
  operationId: string;
  ts: number;
}

export interface DeployFinishedEvent {
  type: "deploy:finished";
  provider: "vercel";
  projectId: string;
  success: boolean;
  url?: string;
  operationId?: string;
  ts: number;
}

export interface GithubPushEvent {
  type: "github:push";
  projectId: string;
  branch: string;
  sha: string;
  ts: number;
}

export interface SanityWebhookEvent {
  type: "sanity:webhook";
  projectId: string;
  count: number;
  ts: number;
}

export interface StatusUpdateEvent {
  type: "status:update";
  projectId: string;
  items: IntegrationStatus[];
  ts: number;
}

export type IntegrationEvent =
  | DeployStartedEvent
  | DeployFinishedEvent
  | GithubPushEvent
  | SanityWebhookEvent
  | StatusUpdateEvent;

export type EventType = IntegrationEvent["type"];

// --- the client ---------------------------------------------------------------------------------------------

export declare const PROVIDERS: readonly ProviderKey[];
export declare const EVENT_TYPES: readonly EventType[];
export declare const OVERLOADED_EVENT: OverloadedFrame["event"];
export declare function newIdempotencyKey(): string;

export interface ClientOptions {
  /** Where the endpoints are mounted; default "/api/integrations". */
  baseUrl?: string;
  /** Sent with every fetch (not with EventSource, which cannot send headers: use `query`). */
  headers?: Record<string, string>;
  fetch?: typeof globalThis.fetch;
}

export type StatusResult =
  | { notModified: true; etag: string | null }
  | { notModified: false; etag: string | null; envelope: StatusEnvelope };

export interface ActResult {
  status: number;
  idempotencyKey: string;
  replayed: boolean;
  body: ActionResponse;
}

/**
 * "open": connected. "reconnecting": the browser is retrying by itself (Last-Event-ID sent). "closed": the
 * browser gave up; the client reopens the stream after a back-off. "overloaded": the server is over its
 * connection caps; it asked to come back after `retry` milliseconds, and the browser will.
 */
export type StreamStatus = "open" | "reconnecting" | "closed" | "overloaded";

/** The one frame of a stream refused over the connection caps (`event: overloaded`, then the stream ends). */
export interface OverloadedFrame {
  event: "overloaded";
  data: string;
  /** Milliseconds before reconnecting. */
  retry: number;
}

export interface EventsOptions {
  onEvent?: (event: IntegrationEvent, id: string | null) => void;
  onStatus?: (status: StreamStatus) => void;
  /** Extra query parameters (e.g. what the host's authenticator reads). */
  query?: Record<string, string>;
  EventSourceImpl?: typeof EventSource;
}

export interface EventStream {
  source: EventSource | null;
  lastEventId: string | null;
  closed: boolean;
  reconnects: number;
  close(): void;
}

export declare class IntegrationStatusClient {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;
  readonly headers: Record<string, string>;
  status(projectId: string, options?: { etag?: string | null; signal?: AbortSignal }): Promise<StatusResult>;
  act(request: ActionRequest, options?: { idempotencyKey?: string; signal?: AbortSignal }): Promise<ActResult>;
  events(projectId: string, options?: EventsOptions): EventStream;
}

export declare class IntegrationStatusError extends Error {
  constructor(status: number, error?: ApiError);
  readonly status: number;
  readonly error: ApiError;
}
