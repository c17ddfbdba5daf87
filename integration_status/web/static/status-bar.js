// A dependency-free status bar for integration-status: [🗃️ DB] [📦 Git] [🚀 Deploy] [📝 CMS].
// Polls the status endpoint with If-None-Match (a 304 keeps what is shown, untouched), applies Server-Sent
// Events in between, and offers the quick actions the server lists for this viewer.

import { EVENT_TYPES, IntegrationStatusClient, newIdempotencyKey } from "./integration-status.js";

export { EVENT_TYPES, newIdempotencyKey };

export const INDICATORS = [
  { key: "supabase", icon: "🗃️", label: "DB", name: "Database (Supabase)" },
  { key: "github", icon: "📦", label: "Git", name: "Git (GitHub)" },
  { key: "vercel", icon: "🚀", label: "Deploy", name: "Deployments (Vercel)" },
  { key: "sanity", icon: "📝", label: "CMS", name: "CMS (Sanity)" },
];
// Colour is never the only signal: each status also has its own glyph and words.
export const STATUS_LOOK = {
  connected: { glyph: "✓", text: "Connected" },
  warning: { glyph: "▲", text: "Warning" },
  error: { glyph: "✕", text: "Error" },
  disconnected: { glyph: "○", text: "Not connected" },
};

export function mountStatusBar(root, options) {
  const opts = { baseUrl: "/api/integrations", pollMs: 10_000, headers: {}, eventQuery: {}, onEvent() {}, ...options };
  const client = new IntegrationStatusClient({ baseUrl: opts.baseUrl, headers: opts.headers });
  const state = {
    items: [], etag: null, progress: {}, notes: {}, openMenu: null,
    polls: 0, notModified: 0, renders: 0, events: [], lastEventId: null, stream: "connecting",
  };
  const list = document.createElement("ul");
  list.className = "status-bar";
  list.setAttribute("aria-label", "Integration status");
  // One polite live region announces what changed, instead of re-reading the whole bar.
  const live = document.createElement("div");
  live.className = "visually-hidden";
  live.setAttribute("role", "status");
  live.setAttribute("aria-live", "polite");
  root.replaceChildren(list, live);
  root.state = state;
  const names = Object.fromEntries(INDICATORS.map((i) => [i.key, i.name]));

  function announce(text) {
    if (text) live.textContent = text;
  }

  async function poll() {
    try {
      const result = await client.status(opts.projectId, { etag: state.etag });
      state.polls += 1;
      if (result.notModified) { state.notModified += 1; return; }
      state.etag = result.etag;
      apply(result.envelope.items);
    } catch {
      // a network hiccup or an error answer: keep what is shown, try again at the next poll
    }
  }

  function apply(items) {
    if (JSON.stringify(items) === JSON.stringify(state.items)) return;
    const before = Object.fromEntries(state.items.map((i) => [i.key, i]));
    const changes = items.filter((i) => before[i.key] && (before[i.key].status !== i.status || !!before[i.key].stale !== !!i.stale))
      .map((i) => `${names[i.key]}: ${STATUS_LOOK[i.status]?.text ?? i.status}${i.stale ? ", stale" : ""}`);
    state.items = items;
    render();
    announce(changes.join(". "));
  }

  function onEvent(event, id) {
    if (id) state.lastEventId = id;
    state.events.push({ type: event.type, id, ts: event.ts, at: Date.now(), count: event.count });
    if (state.events.length > 100) state.events.shift();
    if (event.type === "status:update") {
      apply(event.items);
    } else if (event.type === "deploy:started") {
      state.progress.vercel = "Deploying…";
      render();
      announce("Deployment started");
    } else if (event.type === "deploy:finished") {
      state.progress.vercel = event.success ? "Deployed ✓" : "Deploy failed ✕";
      render();
      announce(event.success ? "Deployment finished" : "Deployment failed");
    } else if (event.type === "github:push") {
      state.notes.github = event.sha ? `Pushed ${event.sha.slice(0, 7)}` : "New push";
      render();
    } else if (event.type === "sanity:webhook") {
      state.notes.sanity = `${event.count} doc${event.count === 1 ? "" : "s"} updated`;
      render();
    }
    opts.onEvent(event);
  }

  async function runAction(item, action) {
    state.openMenu = null;
    state.progress[item.key] = `${action.label}…`;
    render();
    focusIndicator(item.key);
    try {
      const { status, body } = await client.act(
        { projectId: opts.projectId, provider: item.key, action: action.id },
        { idempotencyKey: newIdempotencyKey() },
      );
      if (body.success) {
        // 202: the action goes on; its events (deploy:started / deploy:finished) say how it went.
        if (body.url) state.progress[item.key] = `${action.label}: ${body.url}`;
        else if (status === 200) state.progress[item.key] = `${action.label} ✓`;
      } else {
        const error = body.error ?? {};
        state.progress[item.key] = `${action.label} failed: ${error.message ?? status}` +
          (error.hint ? ` (${error.hint})` : "");
      }
    } catch {
      state.progress[item.key] = `${action.label} failed: network error`;
    }
    render();
    announce(state.progress[item.key]);
  }

  function focusIndicator(key) {
    list.querySelector(`[data-key="${key}"] > button`)?.focus();
  }

  function menuFor(ind, item, button) {
    const menu = document.createElement("ul");
    menu.className = "menu";
    menu.id = `status-menu-${ind.key}`;
    menu.setAttribute("role", "menu");
    menu.setAttribute("aria-label", `${ind.name} actions`);
    menu.hidden = state.openMenu !== ind.key;
    for (const action of item.actions ?? []) {
      const entry = document.createElement("li");
      entry.setAttribute("role", "none");
      const b = document.createElement("button");
      b.type = "button";
      b.setAttribute("role", "menuitem");
      b.dataset.action = action.id;
      b.textContent = action.label;
      if (!action.can) {
        // aria-disabled (not disabled): still focusable, so keyboard users hear why it cannot run.
        b.setAttribute("aria-disabled", "true");
        if (action.reason) {
          const reason = document.createElement("span");
          reason.className = "reason";
          reason.textContent = action.reason;
          b.append(reason);
        }
      }
      b.addEventListener("click", () => { if (action.can) runAction(item, action); });
      entry.append(b);
      menu.append(entry);
    }
    if (!menu.children.length) {
      const none = document.createElement("li");
      none.setAttribute("role", "none");
      none.className = "empty";
      none.textContent = "No actions for your role";
      menu.append(none);
    }
    menu.addEventListener("keydown", (e) => {
      const entries = [...menu.querySelectorAll("[role=menuitem]")];
      const at = entries.indexOf(document.activeElement);
      if (e.key === "Escape") { state.openMenu = null; render(); focusIndicator(ind.key); }
      else if (e.key === "ArrowDown") { e.preventDefault(); entries[(at + 1) % entries.length]?.focus(); }
      else if (e.key === "ArrowUp") { e.preventDefault(); entries[(at - 1 + entries.length) % entries.length]?.focus(); }
    });
    button.setAttribute("aria-controls", menu.id);
    return menu;
  }

  function span(className, text) {
    const el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    return el;
  }

  function render() {
    state.renders += 1;
    const focused = document.activeElement;
    const focusKey = list.contains(focused) ? focused.closest("[data-key]")?.dataset.key : null;
    const focusAction = focused?.dataset?.action;
    const byKey = Object.fromEntries(state.items.map((i) => [i.key, i]));
    const nodes = INDICATORS.map((ind) => {
      const item = byKey[ind.key];
      const li = document.createElement("li");
      li.className = "indicator";
      li.dataset.key = ind.key;
      if (!item) { li.hidden = true; return li; }
      const look = STATUS_LOOK[item.status] ?? { glyph: "?", text: item.status };
      li.dataset.status = item.status;
      li.dataset.stale = item.stale ? "true" : "false";
      const button = document.createElement("button");
      button.type = "button";
      button.title = [item.summary, item.stale ? "Showing the last known status" : null].filter(Boolean).join(" · ");
      button.setAttribute("aria-label", `${ind.name}: ${look.text}${item.stale ? ", stale" : ""}` +
        `${item.summary ? `. ${item.summary}` : ""}${item.problem?.hint ? `. ${item.problem.hint}` : ""}`);
      button.setAttribute("aria-haspopup", "menu");
      button.setAttribute("aria-expanded", String(state.openMenu === ind.key));
      button.append(span("glyph", look.glyph), span("icon", ind.icon), span("label", ind.label));
      for (const child of button.children) child.setAttribute("aria-hidden", "true");
      button.addEventListener("click", () => {
        state.openMenu = state.openMenu === ind.key ? null : ind.key;
        render();
        if (state.openMenu) list.querySelector(`[data-key="${ind.key}"] [role=menuitem]`)?.focus();
      });
      li.append(button, span("summary", item.summary ?? ""));
      if (item.stale || item.problem) {
        const words = [item.stale ? "Stale" : null, item.problem?.hint ?? (item.problem ? item.problem.code : null)];
        li.append(span("hint", words.filter(Boolean).join(" · ")));
      }
      if (state.notes[ind.key]) li.append(span("note", state.notes[ind.key]));
      if (state.progress[ind.key]) li.append(span("progress", state.progress[ind.key]));
      li.append(menuFor(ind, item, button));
      return li;
    });
    list.replaceChildren(...nodes);
    // A re-render must not throw keyboard users back to the top of the page.
    if (focusKey) {
      const selector = focusAction ? `[data-key="${focusKey}"] [data-action="${focusAction}"]` : `[data-key="${focusKey}"] > button`;
      (list.querySelector(selector) ?? list.querySelector(`[data-key="${focusKey}"] > button`))?.focus();
    }
  }

  document.addEventListener("click", (e) => {
    // isConnected: a click that re-rendered the bar has a detached target, which is not "outside".
    if (state.openMenu && e.target.isConnected && !root.contains(e.target)) { state.openMenu = null; render(); }
  });

  poll();
  const timer = setInterval(poll, opts.pollMs);
  const stream = typeof EventSource === "function"
    ? client.events(opts.projectId, {
      query: opts.eventQuery,
      onEvent,
      onStatus(status) { state.stream = status; root.dataset.stream = status; },
    })
    : null;
  state.streamHandle = stream;
  return { state, poll, stop() { clearInterval(timer); stream?.close(); } };
}
