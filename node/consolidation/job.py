"""The consolidation job: new notes, conversations and journal entries become `fact` entries.

One run (SPEC-006 §12.2-12.4): pick this device's unprocessed entries, send them in batches to
the configured cortex through the in-process router, validate each answer strictly
(``answer.parse_answer``), and write the facts, signed by this device, with their sources, the
cortex and the model. A bad answer changes nothing and is logged. Between batches the job
yields to the event loop, so sync and the API go on while it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..memory import Memory, new_entry_id, now_iso, shard_of
from .answer import INSTRUCTIONS, BadAnswer, Proposal, fact_digest, message_text, parse_answer
from .config import ConsolidationConfig
from .fields import Edit, index_rows, mark_superseded, set_fields

log = logging.getLogger(__name__)

SOURCE_KINDS = ("note", "conversation", "journal")
PENDING = "review:pending"
CONSOLIDATED = "consolidated"
MAX_SHOWN_FACTS = 200
MAX_SOURCE_TEXT = 4000
SEEN = b"consolidation:seen:"
REJECTED = b"consolidation:rejected:"
ALL = 10**9  # list limit: every row
SCAN_SLICE = 500  # index rows read per event-loop turn


class Busy(RuntimeError):
    """A run is in progress on this node already."""


@dataclass
class RunReport:
    dry_run: bool
    considered: int = 0
    batches: int = 0
    written: list[dict[str, Any]] = field(default_factory=list)
    proposed: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    rejected_answers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "considered": self.considered,
                "batches": self.batches, "written": self.written, "proposed": self.proposed,
                "skipped": self.skipped, "rejected_answers": self.rejected_answers}


class Consolidator:
    def __init__(self, memory: Memory, router: Any, config: ConsolidationConfig) -> None:
        self.memory = memory
        self.router = router
        self.config = config
        self.me = memory.repo.key.device_id
        self._env, self._kv = memory.repo.store.runtime_db("kv")
        self._lock = asyncio.Lock()
        self.counts = {"runs": 0, "facts_written": 0, "rejected_answers": 0}
        self.last_run: str | None = None

    # -- Runtime state: watermark and rejections -------------------------------------------------
    def _has(self, prefix: bytes, key: str) -> bool:
        with self._env.begin(db=self._kv) as txn:
            return txn.get(prefix + key.encode()) is not None

    def _mark(self, prefix: bytes, keys: list[str]) -> None:
        with self._env.begin(write=True, db=self._kv) as txn:
            for key in keys:
                txn.put(prefix + key.encode(), b"1")

    def remember_rejection(self, text: str) -> None:
        self._mark(REJECTED, [fact_digest(text)])

    # -- what to read ----------------------------------------------------------------------------
    async def scan(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One pass over the Memory index, a slice per event-loop turn (a scan of 10,000
        rows in one go would stall sync and the API for hundreds of ms): the entries to
        consolidate, oldest first (§12.2.1), and the current facts to show, newest first."""
        self.memory.flush_index()
        env, db = self.memory._env, self.memory._index_db
        rows: list[dict[str, Any]] = []
        after = b""
        while True:
            with env.begin(db=db) as txn:
                cur = txn.cursor()
                more = cur.set_range(after)
                n = 0
                while more and n < SCAN_SLICE:
                    key, raw = cur.item()
                    if key != after:
                        row = msgpack.unpackb(raw, raw=False)
                        if row.get("kind") in (*SOURCE_KINDS, "fact"):
                            rows.append(row)
                        n += 1
                    after = bytes(key)
                    more = cur.next()
            if not more:
                break
            await asyncio.sleep(0)
        return self._select(rows)

    def _select(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
        authors = {self.me, *self.config.authors}
        cited: dict[str, str] = {}
        facts = []
        for fact in rows:
            if fact.get("kind") != "fact":
                continue
            if not fact.get("superseded_by"):
                facts.append(fact)
            sources = fact.get("sources")
            if not isinstance(sources, list):  # written by another member: any shape
                continue
            for src in sources:
                if isinstance(src, str):
                    cited.setdefault(src, fact.get("author", ""))
        out = []
        with self._env.begin(db=self._kv) as txn:
            for row in rows:
                if row.get("kind") not in SOURCE_KINDS or row.get("superseded_by"):
                    continue
                if row.get("author") not in authors or txn.get(SEEN + row["id"].encode()):
                    continue
                if row["id"] in cited:
                    if cited[row["id"]] != self.me:
                        log.warning("consolidation: %s is cited by a fact of %s already; "
                                    "skipped (overlapping [consolidation] authors?)",
                                    row["id"], cited[row["id"]])
                    continue
                out.append({k: v for k, v in row.items() if k != "doc"})
        out.sort(key=lambda r: (r.get("created_at", ""), r["id"]))
        facts.sort(key=lambda r: r.get("created_at", ""), reverse=True)
        return out, [{k: v for k, v in f.items() if k != "doc"}
                     for f in facts[:MAX_SHOWN_FACTS]]

    def pending_sources(self) -> list[dict[str, Any]]:
        """The entries a run would consolidate now (for tests and the CLI)."""
        return asyncio.run(self.scan())[0]

    # -- one run ---------------------------------------------------------------------------------
    async def run(self, *, dry_run: bool = False) -> RunReport:
        if not self.config.enabled:
            raise RuntimeError("consolidation is not configured ([consolidation] cortex)")
        if self._lock.locked():
            raise Busy("a consolidation run is in progress on this node")
        async with self._lock:
            report = RunReport(dry_run)
            # the facts shown to the cortex are read in the same scan, then kept up to date
            # with what each batch writes, so a batch costs no scan
            sources, facts = await self.scan()
            report.considered = len(sources)
            for i in range(0, len(sources), self.config.batch):
                written = await self._batch(sources[i:i + self.config.batch], facts, report)
                gone = {r["supersedes"] for r in written if r.get("supersedes")}
                facts[:] = ([*reversed(written), *(f for f in facts if f["id"] not in gone)]
                            [:MAX_SHOWN_FACTS])
                await asyncio.sleep(0)  # sync and the API go on between batches
            if not dry_run:
                self.counts["runs"] += 1
                self.last_run = now_iso()
            return report

    async def _batch(self, batch: list[dict[str, Any]], facts: list[dict[str, Any]],
                     report: RunReport) -> list[dict[str, Any]]:
        """One cortex request; returns the facts written (none in a dry run)."""
        report.batches += 1
        first = batch[0]["id"]
        try:
            cortex, model, text = await self._ask(batch, facts)
            proposals = parse_answer(text, {r["id"] for r in batch}, {f["id"] for f in facts},
                                     max_facts=4 * len(batch))
        except BadAnswer as exc:
            self._rejected(report, first, str(exc))
            return []
        except Exception as exc:  # the router's refusals, timeouts, no route
            self._rejected(report, first, f"the cortex did not answer: {exc}"[:300])
            return []
        keep = self._new_only(proposals, facts, report)
        if report.dry_run:
            report.proposed.extend(
                {"text": p.text, "sources": list(p.sources), "supersedes": p.supersedes,
                 "cortex": cortex, "model": model} for p in keep)
            return []
        written = self._write(keep, cortex, model)
        report.written.extend(written)
        self._mark(SEEN, [r["id"] for r in batch])
        return written

    def _rejected(self, report: RunReport, first: str, why: str) -> None:
        self.counts["rejected_answers"] += 1
        report.rejected_answers.append(why)
        log.warning("consolidation: answer for the batch from %s rejected, nothing written: %s",
                    first, why)

    def _new_only(self, proposals: list[Proposal], facts: list[dict[str, Any]],
                  report: RunReport) -> list[Proposal]:
        """Drop facts already known, rejected before, or repeated within the answer."""
        known = {fact_digest(f["text"]) for f in facts}
        out = []
        for p in proposals:
            if p.digest in known or self._has(REJECTED, p.digest):
                report.skipped += 1
                continue
            known.add(p.digest)
            out.append(p)
        return out

    async def _ask(self, batch: list[dict[str, Any]],
                   facts: list[dict[str, Any]]) -> tuple[str, str, str]:
        payload = {
            "new_entries": [{"id": r["id"], "kind": r["kind"], "created_at": r["created_at"],
                             "text": r["text"][:MAX_SOURCE_TEXT]} for r in batch],
            "current_facts": [{"id": f["id"], "text": f["text"][:MAX_SOURCE_TEXT]}
                              for f in facts],
        }
        body = {"model": self.config.cortex, "stream": False, "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": json.dumps(payload, ensure_ascii=False)},
        ]}
        plan = self.router.plan(body)
        candidate, answer = await self.router.complete(plan)
        model = answer.get("model") if isinstance(answer, dict) else None
        return (candidate.cortex.name, str(model or candidate.cortex.name)[:200],
                message_text(answer))

    def _write(self, keep: list[Proposal], cortex: str, model: str) -> list[dict[str, Any]]:
        if not keep:
            return []
        at = now_iso()
        items, extra, fields_of = [], {}, {}
        for p in keep:
            new_id = new_entry_id("fact")
            fields = {"sources": list(p.sources), "cortex": cortex, "model": model,
                      "valid_from": at}
            fields_of[new_id] = fields
            item: dict[str, Any] = {"id": new_id, "text": p.text, "kind": "fact",
                                    "tags": list(dict.fromkeys(
                                        [CONSOLIDATED, PENDING, *p.tags]))}
            edits: list[Edit] = [set_fields(new_id, fields)]
            extra.setdefault(shard_of(new_id), []).extend(edits)
            if p.supersedes:
                item["supersedes"] = p.supersedes
                extra.setdefault(shard_of(p.supersedes), []).append(
                    mark_superseded(p.supersedes, new_id, at))
            items.append(item)
        rows = self.memory.add_many(items, extra=extra)
        rows = [{**r, **fields_of[r["id"]]} for r in rows]
        # add_many indexed the rows without the extra fields; the log length is unchanged by
        # them, so the index upkeep would not notice: write the full rows now.
        index_rows(self.memory, rows)
        self.counts["facts_written"] += len(rows)
        log.info("consolidation: %d fact(s) written (cortex %s, model %s)", len(rows), cortex,
                 model)
        return rows

    # -- review ----------------------------------------------------------------------------------
    def pending_review(self) -> list[dict[str, Any]]:
        return self.memory.list(kind="fact", tag=PENDING, limit=ALL)

    def review(self, entry_id: str, action: str, text: str | None = None) -> dict[str, Any]:
        entry = self.memory.get(entry_id)  # EntryNotFound
        if entry["kind"] != "fact" or PENDING not in entry["tags"]:
            raise ValueError(f"{entry_id} is not a fact pending review")
        if action == "accept":
            return self.memory.update(entry_id, remove_tags=[PENDING])
        if action == "edit":
            if not text:
                raise ValueError("edit needs the new text")
            return self.memory.update(entry_id, text=text, remove_tags=[PENDING])
        if action == "reject":
            self.remember_rejection(entry["text"])
            return self.memory.delete(entry_id) | {"rejected": True}
        raise ValueError("action must be accept, edit or reject")

    def status(self) -> dict[str, Any]:
        return {"enabled": self.config.enabled, "cortex": self.config.cortex,
                "interval_s": self.config.interval_s, "last_run": self.last_run,
                "running": self._lock.locked(), **self.counts}
