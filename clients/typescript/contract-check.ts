// Compiled by the type-check test only (tsc --noEmit): the client's declared API used as a page would use it.
// The test adds a second file with the JSON the real endpoints answered, typed with these declarations.
import {
  IntegrationStatusClient,
  newIdempotencyKey,
  type IntegrationEvent,
  type IntegrationStatus,
  OVERLOADED_EVENT,
  type OverloadedFrame,
  type StatusEnvelope,
  type StreamStatus,
} from "./integration-status.js";

const refused: OverloadedFrame = { event: OVERLOADED_EVENT, data: "too many connections", retry: 30000 };

const client = new IntegrationStatusClient({ baseUrl: "/api/integrations", headers: { "X-Role": "owner" } });

export async function example(): Promise<string[]> {
  let envelope: StatusEnvelope | null = null;
  const first = await client.status("demo");
  if (!first.notModified) envelope = first.envelope;
  const again = await client.status("demo", { etag: first.etag });
  if (again.notModified) {
    // keep envelope
  }
  const result = await client.act(
    { projectId: "demo", provider: "vercel", action: "deploy" },
    { idempotencyKey: newIdempotencyKey() },
  );
  const operation: string | undefined = result.body.success ? result.body.operationId : result.body.error?.code;
  const stream = client.events("demo", {
    query: { role: "owner" },
    onStatus(status: StreamStatus) {
      if (status === "overloaded") console.log(`server busy, back in ${refused.retry} ms`);
    },
    onEvent(event: IntegrationEvent, id: string | null) {
      switch (event.type) {
        case "status:update":
          envelope = envelope && { ...envelope, items: event.items };
          break;
        case "deploy:started":
          console.log(event.operationId, id);
          break;
        case "deploy:finished":
          console.log(event.success, event.url ?? "");
          break;
        case "github:push":
          console.log(event.branch, event.sha);
          break;
        case "sanity:webhook":
          console.log(event.count);
          break;
      }
    },
  });
  stream.close();
  const items: IntegrationStatus[] = envelope?.items ?? [];
  return [...items.map((i) => `${i.key}:${i.status}${i.stale ? " (stale)" : ""}`), operation ?? ""];
}
