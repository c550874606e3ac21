// The maia-node page: reads the /v1 API with the login cookie, writes with the CSRF header,
// and refreshes the panels a live event (GET /v1/live, server-sent events) says changed.
// Everything from the node is put on the page with textContent, never parsed as HTML.
"use strict";

const state = {
  csrf: null,
  names: new Map(),      // device id -> name, from /v1/devices
  lastSeen: new Map(),   // device id -> when this node last heard from it (epoch s)
  connected: new Set(),  // device ids connected now, from /v1/peers
  others: [],            // the mesh's other member devices: the peers the header counts
  thisDevice: null,      // this node's device id
  stream: "connecting",  // the live stream: "live", "connecting" or "off"
  status: null,
  liveOpenedOnce: false,
  historyId: null,       // the entry whose history panel is open
  reviewEditing: null,   // the proposed fact whose text is being edited in the review panel
};

// -- talking to the node -------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function toLogin() {
  window.location.replace("/ui/login");
}

async function api(method, path, body) {
  const headers = {"Accept": "application/json"};
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = state.csrf || "";
  const init = {method, headers, credentials: "same-origin", cache: "no-store"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (_) { /* empty or not JSON */ }
  if (resp.status === 401) {
    toLogin();
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// A route another feature provides may be missing on this node: null instead of failing.
async function optional(path) {
  try {
    return await api("GET", path);
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) return null;
    throw err;
  }
}

// -- small DOM helpers ---------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(id, items, emptyText) {
  const list = document.getElementById(id);
  list.replaceChildren(...(items.length ? items : [el("li", {class: "empty", text: emptyText})]));
}

function badge(text, kind) {
  return el("span", {class: `badge ${kind || ""}`.trim(), text});
}

function setCount(id, n) {
  document.getElementById(id).textContent = n === null || n === undefined ? "" : String(n);
}

function shortId(id) {
  if (!id) return "";
  const groups = id.split("-");
  return groups.length > 2 ? `${groups[0]}-${groups[1]}…` : id;
}

function nameOf(id) {
  return state.names.get(id) || shortId(id);
}

function toEpoch(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return value;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms / 1000;
}

function ago(value) {
  const t = toEpoch(value);
  if (t === null) return "never";
  const s = Math.round(Date.now() / 1000 - t);
  if (s < 0) return inFuture(-s);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function inFuture(s) {
  if (s < 60) return `in ${s} s`;
  if (s < 3600) return `in ${Math.floor(s / 60)} min`;
  if (s < 86400) return `in ${Math.floor(s / 3600)} h`;
  return `in ${Math.floor(s / 86400)} d`;
}

function timeEl(value) {
  const t = toEpoch(value);
  const node = el("time", {text: ago(value), "data-epoch": t === null ? "" : String(t)});
  if (t !== null) node.title = new Date(t * 1000).toLocaleString();
  return node;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function notAvailable(id, what) {
  fill(id, [], `not available: ${what}`);
}

// A device id is 63 characters: one line, cut with an ellipsis by the stylesheet. The element
// still holds the whole id (selecting it or searching the page finds all of it), its title
// shows it, and the button next to it copies it.
function idBox(id) {
  const code = el("code", {class: "id", text: id, title: id});
  const button = el("button", {type: "button", class: "copy", text: "Copy",
    title: "Copy the full device id", "aria-label": "Copy the full device id"});
  button.addEventListener("click", () => copyText(code, button));
  return el("span", {class: "id-box"}, code, button);
}

async function copyText(code, button) {
  const text = code.textContent;
  let copied = false;
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); copied = true; } catch (_) { /* below */ }
  }
  if (!copied) {
    // Not a secure context (the page opened by a LAN name): select the id, the old way.
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { copied = document.execCommand("copy"); } catch (_) { copied = false; }
  }
  button.textContent = copied ? "Copied" : "Selected: press Ctrl+C";
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
}

// A device that is not this one and not connected now: what it announced may be out of date.
function isAway(deviceId) {
  return Boolean(deviceId) && deviceId !== state.thisDevice && !state.connected.has(deviceId);
}

function awayNote(deviceId) {
  return el("div", {class: "meta away-note"}, badge("device offline", "off"), " last heard ",
    timeEl(state.lastSeen.get(deviceId)));
}

function repoLabel(repository) {
  if (!repository) return "";
  return repository.startsWith("local:") ? `${repository.slice(6)} (no remote)` : repository;
}

// -- panels --------------------------------------------------------------------------------------
async function refreshStatus() {
  const [status, devices, peers] = await Promise.all([
    api("GET", "/v1/status"),
    api("GET", "/v1/devices"),
    api("GET", "/v1/peers"),
  ]);
  state.status = status;
  state.thisDevice = status.device_id;
  state.names = new Map(devices.devices.map((d) => [d.device_id, d.name || shortId(d.device_id)]));
  state.connected = new Set(peers.peers.filter((p) => p.connected).map((p) => p.device_id));
  state.lastSeen = new Map();
  for (const item of [...devices.devices, ...peers.peers]) {
    const t = toEpoch(item.last_seen);
    if (item.device_id && t !== null && t > (state.lastSeen.get(item.device_id) || 0)) {
      state.lastSeen.set(item.device_id, t);
    }
  }
  state.others = devices.devices.filter((d) => !d.this_device && d.status === "member");
  renderLive();
  document.getElementById("node-name").textContent = status.name || "";
  document.title = `maia-node · ${status.name || shortId(status.device_id)}`;
  document.getElementById("device-id").replaceChildren(idBox(status.device_id));
  document.getElementById("mesh-id").textContent = status.mesh ? status.mesh.id.slice(0, 16) : "none";
  renderDevices(devices.devices, status.storage_by_device || []);
  renderPeers(peers.peers);
  renderNearby(status.discovery);
  renderBackups(status.backup);
  await Promise.all([refreshCortices(status.routing), refreshSessions(status.sessions)]);
}

function sizeText(n) {
  for (const [unit, size] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]]) {
    if (n >= size) return `${(n / size).toFixed(1)} ${unit}`;
  }
  return `${n} B`;
}

function renderDevices(devices, storage) {
  // Bytes of signed changes each device made this node store (SPEC-005 §6.6).
  const stored = new Map(storage.map((s) => [s.device_id, s.bytes]));
  setCount("devices-count", devices.filter((d) => d.status === "member").length);
  // This device first, then members by name, revoked ones last.
  const order = (d) => (d.this_device ? 0 : d.status === "revoked" ? 2 : 1);
  const sorted = [...devices].sort((x, y) => order(x) - order(y) ||
    (x.name || "").localeCompare(y.name || ""));
  fill("devices", sorted.map((d) => {
    let where;
    const connected = state.connected.has(d.device_id);
    if (d.this_device) where = badge("this device", "self");
    else if (d.status === "revoked") where = badge("revoked", "bad");
    else if (connected) where = badge("connected", "good");
    else where = badge("offline", "off");
    const seen = d.this_device || connected ? null
      : el("div", {class: "meta"}, "last seen ", timeEl(d.last_seen));
    return el("li", {class: "device", "data-device-id": d.device_id, "data-status": d.status},
      el("div", {class: "line"}, el("strong", {text: d.name || "(unnamed)"}), where),
      el("div", {class: "meta"}, idBox(d.device_id)),
      el("div", {class: "meta storage"}, `stores ${sizeText(stored.get(d.device_id) || 0)} here`),
      seen);
  }), "no devices");
}

function renderPeers(peers) {
  fill("peers", peers.map((p) => {
    const name = p.device_id ? nameOf(p.device_id) : p.address;
    const state_ = p.connected ? badge("connected", "good") : badge("not connected", "off");
    const details = [];
    if (p.address) details.push(p.address);
    if (p.changes_accepted) details.push(`${plural(p.changes_accepted, "change")} received`);
    if (p.messages_rejected) details.push(`${p.messages_rejected} rejected`);
    return el("li", {class: "peer", "data-device-id": p.device_id || ""},
      el("div", {class: "line"}, el("strong", {text: name}), state_),
      el("div", {class: "meta", text: details.join(" · ")}),
      p.connected ? el("div", {class: "meta"}, "connected ", timeEl(p.connected_since))
        : el("div", {class: "meta"}, "last seen ", timeEl(p.last_seen)),
      p.last_error ? el("div", {class: "meta warn", text: p.last_error}) : null);
  }), "no peers yet: add one with maia peer add HOST:PORT, or let discovery find them");
}

function renderNearby(discovery) {
  if (!discovery) return notAvailable("nearby", "this node runs without discovery");
  if (!discovery.enabled) return fill("nearby", [], "discovery (mDNS) is off on this node");
  fill("nearby", (discovery.nearby || []).map((n) => el("li", {class: "nearby"},
    el("div", {class: "line"}, el("strong", {text: shortId(n.device_id)}), badge("unpaired", "warn")),
    el("div", {class: "meta", text: (n.addresses || []).join(", ")}),
    el("div", {class: "meta", text: `seen ${Math.round(n.seen_seconds_ago || 0)} s ago`}))),
  "no unpaired node nearby");
}

async function refreshSessions(section) {
  if (!section) {
    notAvailable("sessions", "this node runs without agent sessions");
    notAvailable("leases", "this node runs without agent sessions");
    return;
  }
  const [sessions, leases] = await Promise.all([
    optional("/v1/sessions?limit=100"), optional("/v1/leases?limit=100"),
  ]);
  if (!sessions) notAvailable("sessions", "the node did not answer");
  else fill("sessions", sessions.sessions.map((s) => {
    const away = !s.local && isAway(s.device);
    return el("li", {class: away ? "session away" : "session", "data-session": s.id,
      "data-device-id": s.device || ""},
    el("div", {class: "line"}, el("strong", {text: s.agent || "agent"}),
      badge(s.local ? "this device" : (s.device_name || shortId(s.device)), s.local ? "self" : "")),
    el("div", {class: "meta repo", text: [repoLabel(s.repository), s.branch].filter(Boolean).join(" @ ") ||
      s.cwd || ""}),
    s.task ? el("div", {class: "meta", text: s.task}) : null,
    away ? awayNote(s.device)
      : el("div", {class: "meta"}, "started ", timeEl(s.started_at), " · seen ", timeEl(s.last_seen)));
  }), "no live session");
  if (!leases) notAvailable("leases", "the node did not answer");
  else fill("leases", leases.leases.map((l) => {
    const away = !l.local && isAway(l.device);
    return el("li", {class: away ? "lease away" : "lease", "data-lease": l.id,
      "data-device-id": l.device || ""},
    el("div", {class: "line"}, el("code", {text: l.pattern}),
      badge(l.mode, l.mode === "exclusive" ? "warn" : "")),
    el("div", {class: "meta repo", text: `in ${repoLabel(l.repository)}`}),
    el("div", {class: "meta", text: `${l.agent || "agent"} on ${l.local ? "this device" :
      (l.device_name || shortId(l.device))}` + (l.task ? ` · ${l.task}` : "")}),
    l.note ? el("div", {class: "meta", text: l.note}) : null,
    away ? awayNote(l.device) : null,
    el("div", {class: "meta"}, "expires ", timeEl(l.expires_at)));
  }), "no lease held");
}

// Cortices from GET /v1/models (SPEC-006 §4.7): every cortex of the mesh once, with its kind,
// model and each host's state and load, including hosts that are away.
async function refreshCortices(routing) {
  if (!routing) return notAvailable("cortices", "this node runs without cortex routing");
  const models = await optional("/v1/models");
  if (!models) return notAvailable("cortices", "the node did not answer");
  const cortices = models.data.filter((m) => m.maia && Array.isArray(m.maia.hosts));
  const aliases = models.data.filter((m) => m.maia && m.maia.alias).map((m) => m.id);
  const rows = cortices.map(cortexRow);
  if (rows.length && aliases.length) {
    // What to put in an OpenAI client's "model": a cortex's name, or one of these.
    rows.push(el("li", {class: "hint meta", text: `OpenAI clients (base URL ${location.origin}/v1) ` +
      `may ask for a cortex by name, or for ${aliases.join(", ")}`}));
  }
  fill("cortices", rows,
    "no cortex in the mesh: add a [cortex.<name>] table to config.toml on a device");
}

function cortexRow(m) {
  const info = m.maia;
  const available = info.available !== false;
  const facts = [info.model, info.remote ? "remote provider" : "local model"];
  if (info.context_window) facts.push(`${Math.round(info.context_window / 1024)}k context`);
  return el("li", {class: available ? "cortex" : "cortex offline", "data-cortex": m.id},
    el("div", {class: "line"}, el("strong", {text: m.id}), badge(info.kind, "kind"),
      available ? null : badge("unavailable: every host is offline", "bad")),
    el("div", {class: "meta model", text: facts.filter(Boolean).join(" · ")}),
    el("ul", {class: "hosts"}, ...info.hosts.map((h) => hostRow(h, m.id))),
    ...(info.conflicts || []).map((c) => el("div", {class: "meta warn",
      text: `${c.name || shortId(c.device_id)} also calls its cortex ${m.id} (${c.model}); ` +
        "this device defines that name itself and never sends it there. Rename one of them."})));
}

function hostRow(h, cortex) {
  const where = h.local ? "this device" : (h.name || nameOf(h.device_id));
  let health;
  if (h.online === false) health = badge("offline", "off");
  else if (h.approved === false) health = badge("not approved: sent no prompt", "bad");
  else if (h.name_conflict) health = badge("name conflict", "bad");
  else if (h.cooling_down) health = badge("cooling down", "warn");
  else if (!h.healthy) health = badge("unhealthy", "bad");
  else health = badge("healthy", "good");
  if (h.cooling_down) health.title = h.cooling_down;
  let load;
  if (h.online === false) load = el("span", {class: "load"}, "last seen ", timeEl(h.last_seen));
  else {
    load = el("span", {class: "load", text: `load ${h.in_flight}/${h.max_concurrency}` +
      (h.rtt_ms !== null && h.rtt_ms !== undefined ? ` · ${h.rtt_ms.toFixed(1)} ms away` : "")});
    load.title = `${h.in_flight} of ${h.max_concurrency} request slots in use`;
  }
  // SPEC-006 §6.7: a peer's cortex first offered after this node's learning window waits for
  // the owner; approving it here is the same call as `maia cortex allow DEVICE NAME`
  const approve = h.approved === false && h.online !== false ? el("button", {type: "button",
    class: "quiet approve", text: "Approve",
    onclick: (event) => approveHost(event.currentTarget, h.device_id, cortex)}) : null;
  return el("li", {class: h.online === false ? "host offline" : "host",
    "data-device-id": h.device_id}, el("span", {class: "where", text: where}), health, load,
    approve);
}

async function approveHost(button, deviceId, cortex) {
  button.disabled = true;
  try {
    await api("POST", "/v1/cortices/allow", {device_id: deviceId, name: cortex});
    schedule("status");
  } catch (err) {
    button.textContent = `Not approved: ${err.message}`;
  }
}

function renderBackups(backup) {
  if (!backup) return notAvailable("backups", "this node runs without backups");
  // Say "never" once: a node with no verified backup gets one row that says so and what to do.
  const verified = backup.last_verified
    ? el("li", {class: "backup", "data-row": "verified"},
      el("div", {class: "line"}, el("strong", {text: "Last verified backup"}), badge("verified", "good")),
      el("div", {class: "meta"}, timeEl(backup.last_verified)))
    : el("li", {class: "backup", "data-row": "verified"},
      el("div", {class: "line"}, el("strong", {text: "Last verified backup"}), badge("none yet", "bad")),
      el("div", {class: "meta warn", text: "No backup has been verified yet: run maia backup create, " +
        "then maia backup verify."}));
  const items = [
    verified,
    el("li", {class: "backup", "data-row": "run"},
      el("div", {class: "line"}, el("strong", {text: "Last run"}),
        backup.running ? badge("running", "warn") : null),
      backup.last_run
        ? el("div", {class: "meta"}, timeEl(backup.last_run), backup.runs ? ` · ${plural(backup.runs, "run")}` : "")
        : el("div", {class: "meta", text: backup.running ? "the first run is under way" : "not run yet"})),
    el("li", {class: "backup", "data-row": "schedule"},
      el("div", {class: "line"}, el("strong", {text: "Schedule"}),
        backup.scheduled ? badge("scheduled", "good") : badge("off", "off")),
      el("div", {class: "meta", text: backup.target ? `to ${backup.target}` :
        "no target configured ([backup] target in config.toml)"}),
      backup.next_run ? el("div", {class: "meta"}, "next ", timeEl(backup.next_run)) : null),
  ];
  // The node's warning repeats the row above when nothing is verified; show it otherwise
  // (an old backup, a rollback found).
  if (backup.warning && backup.last_verified) items.push(el("li", {class: "warn-row", text: backup.warning}));
  if (backup.last_error) items.push(el("li", {class: "warn-row", text: `last error: ${backup.last_error}`}));
  fill("backups", items, "");
}

async function refreshMemory() {
  const data = await api("GET", "/v1/memory?limit=20");
  setCount("memory-count", state.status ? state.status.memory_entries : data.count);
  fill("memory", data.entries.map((e) => el("li", {class: "entry", "data-entry-id": e.id},
    el("p", {class: "text", text: e.text}),
    el("div", {class: "meta"},
      badge(e.kind, "kind"), " ",
      ...(e.tags || []).map((t) => el("span", {class: "tag", text: `#${t}`})),
      " ", nameOf(e.author), " · ", timeEl(e.created_at), " ",
      e.edits > 1 ? el("button", {type: "button", class: "quiet history-open",
        text: `history (${e.edits})`, onclick: () => openHistory(e.id)}) : null))),
  "no entries yet");
}

// Deleted entries (SPEC-005 §10.10), read only while their panel is open: the list is
// rebuilt from the shards changed since it was last read, which a page refresh need not pay.
async function refreshDeleted() {
  if (!document.getElementById("deleted-panel").open) return;
  const data = await api("GET", "/v1/memory/deleted?limit=20");
  fill("deleted", data.entries.map((e) => el("li", {class: "entry", "data-entry-id": e.id},
    el("p", {class: "text", text: e.text || ""}),
    el("div", {class: "meta"},
      badge(e.kind || "entry", "kind"), " deleted ", timeEl(e.deleted_at), " by ",
      e.deleted_by_name || nameOf(e.deleted_by), " ",
      el("button", {type: "button", class: "quiet undelete", text: "Undelete",
        onclick: () => undeleteEntry(e.id)})))),
  "no deleted entries");
}

async function undeleteEntry(id) {
  const error = document.getElementById("deleted-error");
  error.hidden = true;
  try {
    await api("POST", `/v1/memory/${encodeURIComponent(id)}/undelete`);
    schedule("memory", "deleted", "documents", "status");
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
}

const KIND_WORDS = {note: "Notes", fact: "Facts", skill: "Skills", conversation: "Conversations",
  journal: "Journal"};
const SYNC_WORDS = {in_sync: "in sync", differs: "syncing", unknown: "not compared yet", offline: "offline"};
const SYNC_BADGES = {in_sync: "good", differs: "warn", unknown: "", offline: "off"};
const SHARDS = 8;  // memory/<kind>/<yyyy-mm>/<0-7> (SPEC-001 §6)

// What a document is, in words: "Notes · December 2026 · part 1 of 8" for memory/note/2026-12/0.
function documentTitle(id) {
  if (id === "identity") return "Identity";
  const m = /^memory\/([a-z]+)\/(\d{4})-(\d{2})\/(\d+)$/.exec(id);
  if (!m) return id;
  const month = new Date(Date.UTC(Number(m[2]), Number(m[3]) - 1, 1))
    .toLocaleString("en", {month: "long", year: "numeric", timeZone: "UTC"});
  return `${KIND_WORDS[m[1]] || m[1]} · ${month} · part ${Number(m[4]) + 1} of ${SHARDS}`;
}

function documentAbout(d) {
  if (d.id === "identity") return "the mesh's devices, their names and keys";
  return d.layer === "memory" ? "memory entries" : "";
}

function syncBadge(p) {
  const node = badge(`${p.name || shortId(p.device_id)}: ${SYNC_WORDS[p.state] || p.state}`,
    SYNC_BADGES[p.state] || "");
  if (p.state === "offline") node.title = `last seen ${ago(p.last_seen)}`;
  else if (p.state === "differs") node.title = "changes are still being exchanged";
  return node;
}

// -- the history panel: every version of one entry, each as a word diff of the one before -------
// (SPEC-005 §10.7; the versions come from the node, read from the document's signed history)
function wordDiff(before, after) {
  const a = before.split(/(\s+)/);
  const b = after.split(/(\s+)/);
  if (a.length * b.length > 1e6) return [["del", before], ["ins", after]];  // too long to align
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({length: n + 1}, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  const push = (kind, text) => {
    const last = out[out.length - 1];
    if (last && last[0] === kind) last[1] += text; else out.push([kind, text]);
  };
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { push("same", a[i]); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) push("del", a[i++]);
    else push("ins", b[j++]);
  }
  while (i < n) push("del", a[i++]);
  while (j < m) push("ins", b[j++]);
  return out.filter(([, text]) => text);
}

function diffEl(before, after) {
  const node = el("p", {class: "diff"});
  for (const [kind, text] of wordDiff(before || "", after || "")) {
    node.append(kind === "same" ? document.createTextNode(text) : el(kind, {text}));
  }
  return node;
}

async function openHistory(id) {
  state.historyId = id;
  const panel = document.getElementById("history");
  panel.hidden = false;
  await refreshHistory();
  panel.scrollIntoView({block: "nearest"});
}

function closeHistory() {
  state.historyId = null;
  document.getElementById("history").hidden = true;
}

async function restoreVersion(id, version) {
  const error = document.getElementById("history-error");
  error.hidden = true;
  try {
    await api("POST", `/v1/memory/${encodeURIComponent(id)}/restore`, {version});
    schedule("memory", "history", "documents", "status");
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  }
}

async function refreshHistory() {
  const id = state.historyId;
  if (!id) return;
  const path = `/v1/memory/${encodeURIComponent(id)}`;
  const [data, entry] = await Promise.all([api("GET", `${path}/history`), optional(path)]);
  if (state.historyId !== id) return;  // another entry was opened meanwhile
  document.getElementById("history-title").textContent = id;
  const notice = document.getElementById("history-concurrent");
  const live = (entry && entry.concurrent) || [];
  notice.hidden = live.length < 2;
  notice.textContent = live.length < 2 ? "" : `Edited on ${live.map((c) => c.device_name ||
    shortId(c.device_id)).join(" and ")} at the same time. Every text is kept below: restore the one to keep.`;
  const concurrent = new Set(live.map((c) => c.version));
  const versions = data.history;
  const latest = versions.length ? versions[versions.length - 1].version : null;
  const items = versions.map((v, i) => {
    const before = i > 0 ? versions[i - 1] : null;
    const tagsBefore = new Set(before ? before.tags : []);
    const tagsNow = new Set(v.tags || []);
    const tagChanges = [
      ...[...tagsNow].filter((t) => !tagsBefore.has(t)).map((t) => el("ins", {class: "tag", text: `#${t}`})),
      ...[...tagsBefore].filter((t) => !tagsNow.has(t)).map((t) => el("del", {class: "tag", text: `#${t}`})),
    ];
    return el("li", {class: "version", "data-version": v.version},
      el("div", {class: "line"},
        el("strong", {text: `v${v.n} ${v.op}`}), " ",
        badge(v.verified ? "verified" : "unverified", v.verified ? "good" : "bad"),
        concurrent.has(v.version) ? badge("concurrent", "warn") : null,
        ...(v.altered_by || []).map((a) => badge(`altered by ${a.device_name || shortId(a.device_id)}`, "bad")),
        v.deleted ? badge("deleted", "off") : null),
      el("div", {class: "meta"}, el("code", {text: v.version.slice(0, 12)}), " · ",
        v.device_name || shortId(v.device_id), " · ", timeEl(v.at),
        v.session ? ` · session ${v.session}` : "", v.agent ? ` · ${v.agent}` : ""),
      diffEl(before ? before.text : "", v.text),
      tagChanges.length ? el("div", {class: "meta"}, ...tagChanges) : null,
      v.version !== latest || v.deleted ? el("button", {type: "button", class: "quiet restore",
        text: "Restore this version", onclick: () => restoreVersion(id, v.version)}) : null);
  });
  fill("history-list", items.reverse(), "no versions");
}

async function refreshDocuments() {
  const data = await api("GET", "/v1/documents?limit=100");
  setCount("documents-count", data.documents.length + (data.cursor ? "+" : ""));
  fill("documents", data.documents.map((d) => el("li", {class: "document", "data-doc": d.id},
    el("div", {class: "line"},
      // For experts, the id and heads (the hashes of the newest changes) in the tooltip only.
      el("strong", {class: "doc-title", text: documentTitle(d.id),
        title: `${d.id}\nheads ${d.heads.join("\n      ") || "none"}`}),
      el("span", {class: "meta", text: [documentAbout(d), plural(d.changes, "change"), bytes(d.size_bytes)]
        .filter(Boolean).join(" · ")})),
    el("div", {class: "sync"}, ...d.peers.map(syncBadge)))),
  "no documents");
}

// -- the review panel: facts consolidation proposed (SPEC-006 §12.4.2, SPEC-003 §11.9) ----------
// A fact's text was written by a model that read untrusted notes: text only, like everything.
async function refreshReview() {
  const data = await optional("/v1/consolidation/review");
  if (data === null) return notAvailable("review", "this node has no consolidation");
  setCount("review-count", data.count || "");
  if (state.reviewEditing && !data.facts.some((f) => f.id === state.reviewEditing)) {
    state.reviewEditing = null;
  }
  if (state.reviewEditing) return;  // never throw away what the person is typing
  const items = data.facts.map(reviewItem);
  if (data.count > data.facts.length) {
    items.push(el("li", {class: "meta", text: `the newest ${data.facts.length} of ${data.count}; ` +
      "the others show up as you review these"}));
  }
  const off = state.status && state.status.consolidation && !state.status.consolidation.enabled;
  fill("review", items, off
    ? "nothing to review; consolidation is off on this device ([consolidation] cortex in config.toml), facts another device proposes show up here too"
    : "nothing to review: facts the consolidation cortex proposes show up here");
}

// Its sources come with the list (source_entries), so looking at the panel counts no recall.
function reviewItem(fact) {
  const list = (fact.source_entries || []).map((source) => {
    const link = el("a", {class: "source", href: `#entry-${source.id}`, text: shortId(source.id),
      title: `${source.id}: open its history`});
    link.addEventListener("click", (event) => { event.preventDefault(); openHistory(source.id); });
    return el("li", {"data-source-id": source.id}, link, " ",
      el("span", {class: "source-text",
        text: source.found ? source.text : "not found (deleted, or not synced yet)"}));
  });
  const text = el("p", {class: "text", text: fact.text});
  const actions = el("div", {class: "actions"});
  const item = el("li", {class: "review-fact", "data-entry-id": fact.id}, text,
    el("div", {class: "meta"}, badge("proposed", "warn"), " by cortex ",
      el("strong", {class: "cortex", text: fact.cortex || "?"}), " · model ",
      el("code", {class: "model", text: fact.model || "?"}), " · ", nameOf(fact.author), " · ",
      timeEl(fact.created_at)),
    el("div", {class: "meta"}, list.length === 1 ? "from this entry:" : `from ${list.length} entries:`),
    el("ol", {class: "sources"}, ...list),
    actions);
  const accept = el("button", {type: "button", class: "accept", text: "Accept"});
  const edit = el("button", {type: "button", class: "quiet edit", text: "Edit"});
  const reject = el("button", {type: "button", class: "quiet reject", text: "Reject"});
  accept.addEventListener("click", () => review(fact.id, {action: "accept"}, actions));
  reject.addEventListener("click", () => review(fact.id, {action: "reject"}, actions));
  edit.addEventListener("click", () => editFact(fact, text, actions));
  actions.append(accept, edit, reject);
  return item;
}

function editFact(fact, text, actions) {
  state.reviewEditing = fact.id;
  const box = el("textarea", {class: "edit-text", rows: 2, maxLength: 262144, value: fact.text,
    "aria-label": "The fact's new text"});
  text.replaceWith(box);
  const save = el("button", {type: "button", class: "save", text: "Save and accept"});
  const cancel = el("button", {type: "button", class: "quiet cancel", text: "Cancel"});
  save.addEventListener("click", () => {
    const value = box.value.trim();
    if (value) review(fact.id, {action: "edit", text: value}, actions);
  });
  cancel.addEventListener("click", () => { state.reviewEditing = null; schedule("review"); });
  actions.replaceChildren(save, cancel);
  box.focus();
}

async function review(id, body, actions) {
  const error = document.getElementById("review-error");
  error.hidden = true;
  for (const b of actions.querySelectorAll("button")) b.disabled = true;
  try {
    await api("POST", `/v1/consolidation/review/${encodeURIComponent(id)}`, body);
    state.reviewEditing = null;
    schedule("review", "memory", "documents", "status");
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
    for (const b of actions.querySelectorAll("button")) b.disabled = false;
  }
}

// -- refresh scheduling --------------------------------------------------------------------------
// Sessions, leases and cortex load change without a live event (they are not documents): the
// "activity" panels are read again every 15 s, and with everything else on any event.
async function refreshActivity() {
  if (!state.status) return;
  await Promise.all([refreshCortices(state.status.routing), refreshSessions(state.status.sessions)]);
}

const REFRESHERS = {status: refreshStatus, memory: refreshMemory, documents: refreshDocuments,
  activity: refreshActivity, history: refreshHistory, review: refreshReview,
  deleted: refreshDeleted};
const pending = new Set();
let timer = null;
let running = false;

function schedule(...panels) {
  for (const p of panels) pending.add(p);
  if (timer === null) timer = setTimeout(runRefresh, 150);
}

async function runRefresh() {
  timer = null;
  if (running) { schedule(); return; }
  running = true;
  const panels = [...pending];
  pending.clear();
  // status first: the other panels use the device names it loads.
  try {
    if (panels.includes("status")) await REFRESHERS.status();
    // status already read the activity panels
    const rest = panels.filter((p) => p !== "status" && !(p === "activity" && panels.includes("status")));
    await Promise.all(rest.map((p) => REFRESHERS[p]()));
    banner(revokedNotice(state.status));  // stays up while this device is revoked
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) banner(`Could not refresh: ${err.message}`);
  } finally {
    running = false;
  }
}

function revokedNotice(status) {
  const r = status && status.revoked;
  if (!r) return null;
  return `This device was revoked by ${r.by_name || r.by} at ${r.at}` +
    (r.reason ? ` (${r.reason})` : "") + "; it can no longer change the mesh's documents.";
}

function banner(text) {
  const node = document.getElementById("banner");
  node.hidden = !text;
  node.textContent = text || "";
}

// -- live events ---------------------------------------------------------------------------------
function setLive(stateName) {
  state.stream = stateName;
  renderLive();
}

// The header: whether live updates flow, and whether every known peer is connected. "live"
// alone means both; "live · 1 of 2 peers away" (warning colour) that some peers are gone.
function renderLive() {
  const node = document.getElementById("live");
  node.dataset.state = state.stream;
  // Without the live stream the page cannot know who is connected now: no count then.
  const away = state.stream !== "live" ? []
    : state.others.filter((d) => !state.connected.has(d.device_id));
  node.dataset.away = String(away.length);
  const words = {live: "live", connecting: state.liveOpenedOnce ? "reconnecting" : "connecting",
    off: "offline"}[state.stream] || state.stream;
  if (!away.length) {
    node.textContent = words;
    if (state.stream !== "live") node.title = "no live updates from the node now; the page retries by itself";
    else if (state.others.length) node.title = `live updates; all ${plural(state.others.length, "peer")} connected`;
    else node.title = "live updates; no other device in the mesh yet";
    return;
  }
  const total = state.others.length;
  node.textContent = `${words} · ${away.length} of ${total} ${total === 1 ? "peer" : "peers"} away`;
  node.title = "not connected: " + away.map((d) =>
    `${d.name || shortId(d.device_id)} (last seen ${ago(state.lastSeen.get(d.device_id))})`).join(", ");
}

function connectLive() {
  const source = new EventSource("/v1/live");
  source.onopen = () => {
    setLive("live");
    if (state.liveOpenedOnce) schedule("status", "memory", "documents", "review");  // missed while away
    state.liveOpenedOnce = true;
  };
  source.addEventListener("doc", (event) => {
    const {doc} = JSON.parse(event.data);
    if (doc === "identity") schedule("status", "documents");
    else schedule("memory", "documents", "status", "history", "review", "deleted");
  });
  source.addEventListener("peer", () => schedule("status", "documents"));
  source.addEventListener("resync", () => schedule("status", "memory", "documents", "review"));
  source.onerror = async () => {
    if (source.readyState !== EventSource.CLOSED) {
      setLive("connecting");
      return;
    }
    // Refused (logged out, too many streams, node gone): find out which, then retry.
    setLive("off");
    source.close();
    try {
      await api("GET", "/ui/session");
    } catch (_) { /* 401 already went to the login; otherwise retry below */ }
    setTimeout(connectLive, 5000);
  };
}

// -- actions -------------------------------------------------------------------------------------
function setupMemoryForm() {
  const form = document.getElementById("memory-form");
  const text = document.getElementById("memory-text");
  const kind = document.getElementById("memory-kind");
  const tags = document.getElementById("memory-tags");
  const error = document.getElementById("memory-error");
  const button = document.getElementById("memory-add");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = {text: text.value.trim(), kind: kind.value};
    const tagList = [...new Set(tags.value.split(/[\s,]+/).map((t) => t.replace(/^#/, "")).filter(Boolean))];
    if (tagList.length) body.tags = tagList;
    if (!body.text) return;
    button.disabled = true;
    try {
      await api("POST", "/v1/memory", body);
      text.value = "";
      tags.value = "";
      schedule("memory", "documents", "status");
    } catch (err) {
      const errors = err.problem && err.problem.errors;
      error.textContent = errors && errors.length ? `${errors[0].path || "entry"}: ${errors[0].message}` : err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function setupLogout() {
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("POST", "/ui/logout"); } finally { toLogin(); }
  });
}

function tickTimes() {
  for (const node of document.querySelectorAll("time[data-epoch]")) {
    const t = node.dataset.epoch;
    if (t) node.textContent = ago(Number(t));
  }
}

async function start() {
  try {
    const session = await api("GET", "/ui/session");
    state.csrf = session.csrf_token;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) banner(`Cannot reach the node: ${err.message}`);
    return;
  }
  setupMemoryForm();
  setupLogout();
  document.getElementById("history-close").addEventListener("click", closeHistory);
  document.getElementById("deleted-panel").addEventListener("toggle", () => schedule("deleted"));
  schedule("status", "memory", "documents", "review");
  connectLive();
  setInterval(tickTimes, 10000);
  setInterval(() => schedule("activity"), 15000);
  setInterval(() => schedule("status", "documents"), 60000);  // a slow safety net
}

document.addEventListener("DOMContentLoaded", start);
