// A dependency-free status bar for integration-status: [🗃️ DB] [📦 Git] [🚀 Deploy] [📝 CMS].
// Polls the status endpoint with If-None-Match (keeps its state on 304), applies Server-Sent Events in
// between, and offers the quick actions the server lists for this viewer.

export const INDICATORS = [
  { key: "supabase", icon: "🗃️", label: "DB", name: "Database (Supabase)" },
  { key: "github", icon: "📦", label: "Git", name: "Git (GitHub)" },
  { key: "vercel", icon: "🚀", label: "Deploy", name: "Deployments (Vercel)" },
  { key: "sanity", icon: "📝", label: "CMS", name: "CMS (Sanity)" },
];
export const EVENT_TYPES = ["status:update", "deploy:started", "deploy:finished", "github:push", "sanity:webhook"];

export function newIdempotencyKey() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export function mountStatusBar(root, options) {
  const opts = { pollMs: 10_000, headers: {}, eventQuery: {}, onEvent() {}, ...options };
  const state = { items: [], etag: null, progress: {}, openMenu: null, polls: 0, notModified: 0 };
  const list = document.createElement("ul");
  list.className = "status-bar";
  list.setAttribute("aria-live", "polite");
  list.setAttribute("aria-label", "Integration status");
  root.replaceChildren(list);
  root.state = state;

  async function poll() {
    const headers = { Accept: "application/json", ...opts.headers };
    if (state.etag) headers["If-None-Match"] = state.etag;
    try {
      const res = await fetch(`${opts.baseUrl}/status?projectId=${encodeURIComponent(opts.projectId)}`,
        { headers, cache: "no-store" });
      state.polls += 1;
      if (res.status === 304) { state.notModified += 1; return; }
      if (!res.ok) return;
      state.etag = res.headers.get("ETag");
      const body = await res.json();
      apply(body.items);
    } catch (err) {
      // network hiccup: keep what is shown, try again at the next poll
    }
  }

  function apply(items) {
    state.items = items;
    render();
  }

  function connectEvents() {
    const query = new URLSearchParams({ projectId: opts.projectId, ...opts.eventQuery });
    const source = new EventSource(`${opts.baseUrl}/events?${query}`);
    state.source = source;
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (msg) => {
        const event = JSON.parse(msg.data);
        state.lastEventId = msg.lastEventId;
        if (type === "status:update") {
          apply(event.items);
          state.etag = null; // the next poll fetches the body once to learn its ETag
        } else if (type === "deploy:started") {
          state.progress.vercel = "Deploying…";
          render();
        } else if (type === "deploy:finished") {
          state.progress.vercel = event.success ? "Deployed ✓" : "Deploy failed ✗";
          render();
        }
        opts.onEvent(event);
      });
    }
    return source;
  }

  async function runAction(item, action) {
    state.openMenu = null;
    state.progress[item.key] = `${action.label}…`;
    render();
    try {
      const res = await fetch(`${opts.baseUrl}/actions`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": newIdempotencyKey(), ...opts.headers },
        body: JSON.stringify({ projectId: opts.projectId, provider: item.key, action: action.id }),
      });
      const body = await res.json();
      if (body.success) {
        if (body.url) state.progress[item.key] = `${action.label}: ${body.url}`;
        else if (res.status === 200) state.progress[item.key] = `${action.label} ✓`;
      } else {
        state.progress[item.key] = `${action.label} failed: ${body.error?.message ?? res.status}`;
      }
    } catch (err) {
      state.progress[item.key] = `${action.label} failed: network error`;
    }
    render();
  }

  function render() {
    const byKey = Object.fromEntries(state.items.map((i) => [i.key, i]));
    const nodes = INDICATORS.map((ind) => {
      const item = byKey[ind.key];
      const li = document.createElement("li");
      li.className = "indicator";
      li.dataset.key = ind.key;
      if (!item) { li.hidden = true; return li; }
      li.dataset.status = item.status;
      li.dataset.stale = item.stale ? "true" : "false";
      const button = document.createElement("button");
      button.type = "button";
      button.title = item.summary ?? "";
      const description = `${ind.name}: ${item.status}${item.summary ? `. ${item.summary}` : ""}` +
        `${item.stale ? ". Showing last known status" : ""}`;
      button.setAttribute("aria-label", description);
      button.setAttribute("aria-haspopup", "menu");
      button.setAttribute("aria-expanded", String(state.openMenu === ind.key));
      button.innerHTML = `<span class="dot" aria-hidden="true"></span><span aria-hidden="true">${ind.icon}</span> ${ind.label}`;
      button.addEventListener("click", () => {
        state.openMenu = state.openMenu === ind.key ? null : ind.key;
        render();
        if (state.openMenu) root.querySelector(`[data-key="${ind.key}"] .menu button`)?.focus();
      });
      li.append(button);
      const summary = document.createElement("span");
      summary.className = "summary";
      summary.textContent = item.summary ?? "";
      li.append(summary);
      if (item.stale || item.problem) {
        const hint = document.createElement("span");
        hint.className = "hint";
        hint.textContent = [item.stale ? "Stale" : null, item.problem?.hint].filter(Boolean).join(" · ");
        li.append(hint);
      }
      if (state.progress[ind.key]) {
        const progress = document.createElement("span");
        progress.className = "progress";
        progress.textContent = state.progress[ind.key];
        li.append(progress);
      }
      const menu = document.createElement("ul");
      menu.className = "menu";
      menu.setAttribute("role", "menu");
      menu.hidden = state.openMenu !== ind.key;
      for (const action of item.actions ?? []) {
        const entry = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.setAttribute("role", "menuitem");
        b.dataset.action = action.id;
        b.disabled = !action.can;
        b.textContent = action.label;
        if (!action.can && action.reason) {
          const reason = document.createElement("span");
          reason.className = "reason";
          reason.textContent = action.reason;
          b.append(reason);
        }
        b.addEventListener("click", () => runAction(item, action));
        entry.append(b);
        menu.append(entry);
      }
      if (!menu.children.length) {
        const none = document.createElement("li");
        none.textContent = "No actions";
        menu.append(none);
      }
      menu.addEventListener("keydown", (e) => {
        if (e.key === "Escape") { state.openMenu = null; render(); button.focus(); }
      });
      li.append(menu);
      return li;
    });
    list.replaceChildren(...nodes);
  }

  poll();
  const timer = setInterval(poll, opts.pollMs);
  const source = typeof EventSource === "function" ? connectEvents() : null;
  return { state, poll, stop() { clearInterval(timer); source?.close(); } };
}
