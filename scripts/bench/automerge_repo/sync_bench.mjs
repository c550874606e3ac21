// The maia-node sync workload through automerge-repo, for a side-by-side comparison.
//
// Two processes, as with two maia nodes: a "server" repo (peer A, WebSocketServerAdapter on a
// loopback port) and a "client" repo (peer B, WebSocketClientAdapter). This file is both the
// orchestrator (default) and the two peers (`node sync_bench.mjs server|client`, forked with
// an IPC channel). The orchestrator prints one JSON object with every figure on stdout.
//
//   node sync_bench.mjs --doc entries.automerge --samples 300 --warmup 30 --cap 300
//
// entries.automerge is a saved Automerge document holding the benchmark's memory entries,
// one change per entry (a map entry with the same fields as a maia-node memory entry); the
// Python side writes it from the same corpus it imports into maia-node. Catch-up: A holds
// that document, a fresh B connects and finds it; the time from B's connection to B holding
// A's heads is measured. Live propagation: A writes one entry with DocHandle.change, B
// notices it through its change event. Every wait is bounded by --cap seconds.
//
// With --storage DIR, each repo also keeps its documents on disk with automerge-repo's
// Node.js file-system storage adapter (A in DIR/a, B in DIR/b), as maia-node keeps its own;
// the catch-up then also reports when B's repo has flushed what it received (repo.flush()).
// The adapter writes with fs.promises.writeFile and never calls fsync.

import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { performance } from "node:perf_hooks";
import process from "node:process";

import { Repo } from "@automerge/automerge-repo";
import {
  WebSocketClientAdapter,
  WebSocketServerAdapter,
} from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { WebSocketServer } from "ws";

const now = () => performance.timeOrigin + performance.now(); // ms, comparable across processes

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

// --storage DIR: the file-system storage adapter under DIR/<peer>, else memory only.
function storageFor(peer) {
  const dir = arg("storage", null);
  return dir ? { storage: new NodeFSStorageAdapter(`${dir}/${peer}`) } : {};
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function rssBytes() {
  return process.memoryUsage().rss;
}

function entryOf(item, at, author) {
  const tags = {};
  for (const t of item.tags) tags[t] = true;
  return {
    text: item.text,
    kind: item.kind,
    created_at: at,
    author,
    tags,
    log: [{ at, op: "create" }],
  };
}

const sameHeads = (a, b) =>
  a && b && a.length === b.length && [...a].sort().join() === [...b].sort().join();

// -- peer A: the repo that holds the data ----------------------------------------------------
async function serverMain() {
  const http = createServer();
  const wss = new WebSocketServer({ server: http, maxPayload: 1 << 30 });
  // Every TCP connection A accepted, to count bytes even on connections that have closed.
  const sockets = [];
  wss.on("connection", (_ws, req) => sockets.push(req.socket));
  const traffic = () => ({
    sent: sockets.reduce((n, s) => n + s.bytesWritten, 0),
    received: sockets.reduce((n, s) => n + s.bytesRead, 0),
    connections: sockets.length,
    closed: sockets.filter((s) => s.destroyed).length,
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  const port = http.address().port;
  const repo = new Repo({
    network: [new WebSocketServerAdapter(wss)], sharePolicy: async () => true, ...storageFor("a"),
  });
  const author = "A";
  let handle = null;
  process.on("message", async (msg) => {
    try {
      if (msg.cmd === "load") {
        // The document (one change per entry) is written beforehand; A only has to hold it.
        const t0 = now();
        handle = repo.import(new Uint8Array(readFileSync(msg.path)));
        const doc = handle.doc();
        await repo.flush(); // with storage: on disk before B asks for it
        process.send({
          ok: true, url: handle.url, heads: handle.heads(),
          count: Object.keys(doc.entries || {}).length, load_s: (now() - t0) / 1000, rss: rssBytes(),
        });
      } else if (msg.cmd === "write") {
        const at = new Date().toISOString();
        const t = now();
        handle.change((d) => {
          d.entries[msg.id] = entryOf(msg.item, at, author);
        });
        process.send({ ok: true, t });
      } else if (msg.cmd === "heads") {
        process.send({ ok: true, heads: handle.heads(), cpu_s: cpuSeconds(), rss: rssBytes() });
      } else if (msg.cmd === "traffic") {
        process.send({ ok: true, ...traffic() });
      } else if (msg.cmd === "stop") {
        await repo.shutdown().catch(() => {});
        wss.close();
        http.close();
        process.send({ ok: true });
        process.exit(0);
      }
    } catch (err) {
      process.send({ ok: false, error: String(err && err.stack ? err.stack : err) });
    }
  });
  process.send({ ok: true, port });
}

// -- peer B: a fresh repo that connects to A -------------------------------------------------
async function clientMain() {
  let repo = null;
  let handle = null;
  const watchers = new Map(); // entry id -> resolve(time seen)
  function onChange({ doc }) {
    if (!watchers.size) return;
    const t = now();
    for (const [id, resolve] of watchers) {
      if (doc.entries && doc.entries[id] !== undefined) {
        watchers.delete(id);
        resolve(t);
      }
    }
  }
  process.on("message", async (msg) => {
    try {
      if (msg.cmd === "sync") {
        const c0 = cpuSeconds();
        const t0 = now();
        let tConnected = null;
        const adapter = new WebSocketClientAdapter(`ws://127.0.0.1:${msg.port}`);
        repo = new Repo({ network: [adapter], sharePolicy: async () => true, ...storageFor("b") });
        repo.networkSubsystem.on("peer", () => {
          if (tConnected === null) tConnected = now();
        });
        const deadline = t0 + msg.cap_s * 1000;
        try {
          handle = await repo.find(msg.url, { signal: AbortSignal.timeout(msg.cap_s * 1000) });
        } catch (err) {
          process.send({
            ok: true, complete: false, entries: 0, error: String(err), t0,
            t_connected: tConnected, t_done: now(), cpu_s: cpuSeconds() - c0, rss: rssBytes(),
          });
          return;
        }
        handle.on("change", onChange);
        // find() resolves once the document is available; wait for every change of A.
        while (!sameHeads(handle.heads(), msg.heads) && now() < deadline) {
          await new Promise((r) => setTimeout(r, 5));
        }
        const tDone = now();
        // With a storage adapter: until what B received is written (without: nothing to wait).
        await repo.flush();
        const tFlushed = now();
        const doc = handle.doc();
        process.send({
          ok: true, complete: sameHeads(handle.heads(), msg.heads),
          entries: Object.keys(doc.entries || {}).length,
          t0, t_connected: tConnected, t_done: tDone, t_flushed: tFlushed,
          cpu_s: cpuSeconds() - c0, rss: rssBytes(),
        });
      } else if (msg.cmd === "watch") {
        const seen = new Promise((resolve) => watchers.set(msg.id, resolve));
        process.send({ ok: true, armed: true });
        const timeout = new Promise((r) => setTimeout(() => r(null), msg.timeout_ms));
        const t = await Promise.race([seen, timeout]);
        watchers.delete(msg.id);
        process.send({ ok: true, id: msg.id, t });
      } else if (msg.cmd === "stop") {
        if (repo) await repo.shutdown().catch(() => {});
        process.send({ ok: true });
        process.exit(0);
      }
    } catch (err) {
      process.send({ ok: false, error: String(err && err.stack ? err.stack : err) });
    }
  });
  process.send({ ok: true, ready: true });
}

// -- orchestrator ----------------------------------------------------------------------------
class Peer {
  constructor(role) {
    this.child = fork(new URL(import.meta.url).pathname, [role, ...process.argv.slice(2)],
      { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.queue = [];
    this.waiting = [];
    this.child.on("message", (m) => {
      const w = this.waiting.shift();
      if (w) w(m);
      else this.queue.push(m);
    });
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code) => {
        for (const w of this.waiting.splice(0)) w({ ok: false, error: `${role} exited (${code})` });
        resolve(code);
      });
    });
  }

  next(timeoutMs) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = this.waiting.filter((w) => w !== done);
        resolve({ ok: false, error: "timed out" });
      }, timeoutMs);
      const done = (m) => {
        clearTimeout(timer);
        resolve(m);
      };
      this.waiting.push(done);
    });
  }

  async ask(msg, timeoutMs) {
    this.child.send(msg);
    const reply = await this.next(timeoutMs);
    if (!reply.ok) throw new Error(`${msg.cmd}: ${reply.error}`);
    return reply;
  }
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const k = (sorted.length - 1) * p;
  const lo = Math.floor(k);
  const hi = Math.ceil(k);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo);
}

async function orchestrate() {
  const docPath = arg("doc");
  const samples = Number(arg("samples", "300"));
  const warmup = Number(arg("warmup", "30"));
  const capS = Number(arg("cap", "300"));
  const started = now();
  const left = () => Math.max(1000, capS * 1000 - (now() - started));
  const out = { samples, warmup, cap_s: capS };
  const a = new Peer("server");
  const b = new Peer("client");
  const killer = setTimeout(() => {
    a.child.kill("SIGKILL");
    b.child.kill("SIGKILL");
    out.error = `hard cap of ${capS + 60} s reached`;
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exit(2);
  }, (capS + 60) * 1000);
  try {
    const { port } = await a.next(30000);
    await b.next(30000);
    out.port = port;
    const pop = await a.ask({ cmd: "load", path: docPath }, left());
    out.count = pop.count;
    out.a_load_s = pop.load_s;
    out.a_rss_loaded = pop.rss;
    const capSync = Math.max(1, Math.floor(left() / 1000) - 5);
    const sync = await b.ask({ cmd: "sync", url: pop.url, heads: pop.heads, port, cap_s: capSync }, left());
    const { sent, received, connections, closed } = await a.ask({ cmd: "traffic" }, 10000);
    const net = { sent, received, connections, closed };
    out.catchup = {
      complete: sync.complete,
      net,
      entries: sync.entries,
      connect_ms: sync.t_connected === null ? null : sync.t_connected - sync.t0,
      from_connection_s: ((sync.t_done - (sync.t_connected ?? sync.t0)) / 1000),
      from_start_s: (sync.t_done - sync.t0) / 1000,
      flushed_from_connection_s: ((sync.t_flushed - (sync.t_connected ?? sync.t0)) / 1000),
      storage: arg("storage", null) ? "nodefs" : "memory",
      b_cpu_s: sync.cpu_s,
      b_rss: sync.rss,
    };
    out.catchup.changes_per_s = sync.entries / out.catchup.from_connection_s;
    const latencies = [];
    let timeouts = 0;
    if (sync.complete) {
      for (let i = 0; i < warmup + samples; i++) {
        if (left() < 5000) break;
        const id = `bench-${i}`;
        const item = { text: `live propagation sample ${i} `.padEnd(160, "x"), kind: "note", tags: ["bench"] };
        b.child.send({ cmd: "watch", id, timeout_ms: 5000 });
        await b.next(5000); // armed
        const w = await a.ask({ cmd: "write", id, item }, 5000);
        const seen = await b.next(6000);
        if (!seen.ok || seen.t === null) timeouts += 1;
        else if (i >= warmup) latencies.push(seen.t - w.t);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    latencies.sort((x, y) => x - y);
    out.propagation = {
      n: latencies.length, timeouts,
      p50_ms: percentile(latencies, 0.5), p95_ms: percentile(latencies, 0.95),
      p99_ms: percentile(latencies, 0.99), max_ms: latencies.length ? latencies.at(-1) : null,
    };
    const aStat = await a.ask({ cmd: "heads" }, 10000);
    out.a_rss_end = aStat.rss;
    await a.ask({ cmd: "stop" }, 10000).catch(() => {});
    await b.ask({ cmd: "stop" }, 10000).catch(() => {});
  } catch (err) {
    out.error = String(err && err.message ? err.message : err);
    a.child.kill("SIGKILL");
    b.child.kill("SIGKILL");
  }
  // Reap both peers before leaving, so their CPU time is accounted to this process tree.
  await Promise.race([Promise.all([a.exited, b.exited]), new Promise((r) => setTimeout(r, 10000))]);
  clearTimeout(killer);
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(out.error ? 1 : 0);
}

const role = process.argv[2];
if (role === "server") await serverMain();
else if (role === "client") await clientMain();
else await orchestrate();
