"""The consolidation job: new notes, conversations and journal entries become `fact` entries.

One run (SPEC-006 §12.2-12.4): pick this device's unprocessed entries, send them in batches to
the configured cortex through the in-process router, validate each answer strictly
(``answer.parse_answer``), and write the facts, signed by this device, with their sources, the
cortex and the model. A bad answer changes nothing and is logged. Between batches the job
yields to the event loop, so sync and the API go on while it runs.

The facts of consecutive batches are written together (``Group``, SPEC-006 §12.4.5): up to
``GROUP_ENTRIES`` entries' worth or ``GROUP_SECONDS`` of answers in one signed change to one
shard, the same shard for ``BUCKET_FACTS`` facts; their index rows go with the node's next
index write and the watermark every ``MARK_EVERY`` entries. Written batch by batch, each
batch of 50 cost a durable commit, two Runtime commits and a change to every fact shard (ids
are spread over 8 buckets), and a connected peer had to load, apply and evict all 8 shards
for each batch: it fell seconds behind and live notes waited behind the facts. A group is
still whole batches, so each batch stays all or nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import lmdb
import msgpack
from automerge.core import ROOT, ObjType

from ..memory import EntryNotFound, Memory, new_entry_id, now_iso, shard_of
from ..memory.ids import _B32, BUCKETS, creator_of
from .answer import INSTRUCTIONS, BadAnswer, Proposal, fact_digest, message_text, parse_answer
from .config import ConsolidationConfig
from .fields import Edit, accept_fact, set_fields
from .importance import FIELD as IMPORTANCE
from .importance import INSTRUCTIONS as SCORE_INSTRUCTIONS
from .importance import SALIENCE_KIND, parse_scores, request_payload
from .rejections import Rejections, reject_fact

log = logging.getLogger(__name__)

SOURCE_KINDS = ("note", "conversation", "journal")
PENDING = "review:pending"
CONSOLIDATED = "consolidated"
MAX_SHOWN_FACTS = 200
MAX_SOURCE_TEXT = 4000
MAX_SOURCES = 50  # per fact (SPEC-006 §12.3.1)
REVIEW_PAGE = 200  # pending facts listed at once, newest first
SEEN = b"consolidation:seen:"
ALL = 10**9  # list limit: every row
SCAN_SLICE = 500  # index rows read per event-loop turn
GROUP_ENTRIES = 200  # entries of consecutive batches whose facts are written in one change
GROUP_SECONDS = 1.0  # ... or the batches answered within this long (a slow cortex: one each)
# Facts written into one bucket before the next: a peer holds only 2 documents loaded for
# peers' changes (crdt MAX_REMOTE_LOADED), so a new shard every group made it load and evict
# (re-indexing it whole) a shard per group; every 1,000 facts the 8 buckets still fill evenly.
BUCKET_FACTS = 1000
MARK_EVERY = 1000  # entries whose watermark is written in one Runtime transaction
REPORT_FACTS = 200  # facts a run's report shows (all are counted), SPEC-006 006.12.4.3


def fact_id_in_bucket(bucket: int) -> str:
    """A new fact id whose shard is ``bucket`` (``shard_of`` takes it from the first random
    character): the facts of one group land in one shard. 48 random bits instead of 50."""
    new_id = new_entry_id("fact")
    head, rand = new_id.rsplit("-", 1)
    first = _B32.index(rand[0])
    return f"{head}-{_B32[first - first % BUCKETS + bucket % BUCKETS]}{rand[1:]}"


@dataclass
class Staged:
    """A fact whose batch's answer was valid, with its id drawn, waiting for its group."""
    id: str
    proposal: Proposal
    cortex: str
    model: str
    score: float | None


@dataclass
class Group:
    """Batches answered and validated, written together in one signed change (§12.4.5)."""
    started: float
    entries: int = 0
    seen: list[str] = field(default_factory=list)  # ids of the batches' entries
    facts: list[Staged] = field(default_factory=list)

    def full(self, now: float) -> bool:
        return self.entries >= GROUP_ENTRIES or now - self.started >= GROUP_SECONDS


class Busy(RuntimeError):
    """A run is in progress on this node already."""


@dataclass
class RunReport:
    """What a run did. The facts written (or, in a dry run, proposed) are counted, and the
    first REPORT_FACTS of them kept to show (SPEC-006 006.12.4.3): the answer of a run over
    10,000 entries was 3.9 MB of JSON, encoded in one 80 ms step of the event loop."""

    dry_run: bool
    considered: int = 0
    batches: int = 0
    written: list[dict[str, Any]] = field(default_factory=list)
    proposed: list[dict[str, Any]] = field(default_factory=list)
    written_count: int = 0
    proposed_count: int = 0
    skipped: int = 0
    rejected_answers: list[str] = field(default_factory=list)

    def add_written(self, facts: list[dict[str, Any]]) -> None:
        self.written_count += len(facts)
        self.written.extend(facts[:max(0, REPORT_FACTS - len(self.written))])

    def add_proposed(self, facts: list[dict[str, Any]]) -> None:
        self.proposed_count += len(facts)
        self.proposed.extend(facts[:max(0, REPORT_FACTS - len(self.proposed))])

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "considered": self.considered,
                "batches": self.batches, "written": self.written,
                "written_count": self.written_count, "proposed": self.proposed,
                "proposed_count": self.proposed_count,
                "skipped": self.skipped, "rejected_answers": self.rejected_answers}


class Consolidator:
    def __init__(self, memory: Memory, router: Any, config: ConsolidationConfig) -> None:
        self.memory = memory
        self.router = router
        self.config = config
        self.me = memory.repo.key.device_id
        self._env, self._kv = memory.repo.store.runtime_db("kv")
        self._lock = asyncio.Lock()
        # rejections are signed tombstones; their Runtime cache is filled by the index upkeep
        self.rejections = Rejections(memory.repo.store)
        memory.tombstone_readers.append(self.rejections.note_tombstones)
        # Deleted entries the index saw without the reader (``maia`` offline after Runtime was
        # deleted) are shown to it now; a run's scan re-indexes them before it reads the cache.
        memory.revisit_unread_tombstones()
        self.counts = {"runs": 0, "facts_written": 0, "rejected_answers": 0,
                       "salience_rejected": 0}
        self.last_run: str | None = None
        self._bucket = random.randrange(BUCKETS)  # the shard of the next group's facts
        self._in_bucket = 0  # facts written into it so far
        self._unmarked: list[str] = []  # entries of batches written, watermark not yet

    # -- what to read ----------------------------------------------------------------------------
    async def scan(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One pass over the Memory index, a slice per event-loop turn (a scan of 10,000
        rows in one go would stall sync and the API for hundreds of ms): the entries to
        consolidate, oldest first (§12.2.1), and the current facts to show, newest first."""
        # a shard at a time: a live write's shard, indexed whole, is tens of ms (issue 14);
        # only as many as were due when the scan began, or a member whose changes keep some
        # shard dirty between two turns would hold the scan (and the run's lock) for ever
        for _ in range(self.memory.dirty_shards()):
            if not self.memory.flush_index(limit=1):
                break
            await asyncio.sleep(0)
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
        return await self._select(rows)

    async def _select(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
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
        for start in range(0, len(rows), SCAN_SLICE):  # a slice per event-loop turn
            if start:
                await asyncio.sleep(0)
            with self._env.begin(db=self._kv) as txn:
                for row in rows[start:start + SCAN_SLICE]:
                    if row.get("kind") not in SOURCE_KINDS or row.get("superseded_by"):
                        continue
                    if row.get("author") not in authors or txn.get(
                            SEEN + row["id"].encode()):
                        continue
                    if row["id"] in cited:
                        if cited[row["id"]] != self.me:
                            log.warning("consolidation: %s is cited by a fact of %s already; "
                                        "skipped (overlapping [consolidation] authors?)",
                                        row["id"], cited[row["id"]])
                        continue
                    if self._text_writer(row["id"]) not in authors:
                        continue
                    out.append({k: v for k, v in row.items() if k != "doc"})
        out.sort(key=lambda r: (r.get("created_at", ""), r["id"]))
        facts.sort(key=lambda r: r.get("created_at", ""), reverse=True)
        return out, [{k: v for k, v in f.items() if k != "doc"}
                     for f in facts[:MAX_SHOWN_FACTS]]

    def _text_writer(self, entry_id: str) -> str | None:
        """The device whose signed op set the entry's current ``text`` (the actor its op id
        names), or None. The creator alone is not enough: a member may edit the owner's note,
        and its text was consolidated and the facts signed by this device as the owner's
        (SPEC-006 006.12.2.1). Read only for entries not processed yet, so a run reads it
        once per new entry."""
        try:
            doc = self.memory.repo.open(shard_of(entry_id)).doc
            obj = doc.get(ROOT, entry_id)
            got = doc.get(obj[1], "text") if obj is not None and obj[0] == ObjType.Map else None
        except Exception:  # a shard that cannot be read now: not consolidated this run
            return None
        return creator_of(got[1]) if got is not None else None

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
            # with what each batch proposes (written or staged), so a batch costs no scan
            sources, facts = await self.scan()
            report.considered = len(sources)
            group = Group(time.monotonic())
            try:
                for i in range(0, len(sources), self.config.batch):
                    staged = await self._batch(sources[i:i + self.config.batch], facts,
                                               report, group)
                    gone = {s.proposal.supersedes for s in staged if s.proposal.supersedes}
                    shown = [{"id": s.id, "text": s.proposal.text} for s in reversed(staged)]
                    facts[:] = [*shown, *(f for f in facts if f["id"] not in gone)
                                ][:MAX_SHOWN_FACTS]
                    if group.full(time.monotonic()):
                        self._write_group(group, report)
                        group = Group(time.monotonic())
                        if len(self._unmarked) >= MARK_EVERY:
                            self._mark_seen()
                    await asyncio.sleep(0)  # sync and the API go on between batches
                self._write_group(group, report)
            finally:
                self._mark_seen()  # the groups written, also when the run stops part-way
            if not dry_run:
                self.counts["runs"] += 1
                self.last_run = now_iso()
            return report

    async def _batch(self, batch: list[dict[str, Any]], facts: list[dict[str, Any]],
                     report: RunReport, group: Group) -> list[Staged]:
        """One cortex request; its facts are staged in ``group`` (none in a dry run, none for
        an answer refused) and returned."""
        report.batches += 1
        first = batch[0]["id"]
        try:
            cortex, model, text = await self._ask(batch, facts)
            # in a worker thread: checking 200 facts against the schema is tens of ms on a
            # busy machine, which the peer connection sharing this loop would wait for
            proposals = await asyncio.to_thread(
                parse_answer, text, {r["id"] for r in batch}, {f["id"] for f in facts},
                max_facts=4 * len(batch))
        except BadAnswer as exc:
            self._rejected(report, first, str(exc))
            return []
        except Exception as exc:  # the router's refusals, timeouts, no route
            self._rejected(report, first, f"the cortex did not answer: {exc}"[:300])
            return []
        try:
            return await self._stage(batch, proposals, facts, report, group, cortex, model)
        except Exception as exc:  # a bug or a bad value past the parser: this batch only
            log.exception("consolidation: the facts of the batch from %s could not be "
                          "prepared; nothing written, tried again at the next run", first)
            self._rejected(report, first, f"the facts could not be prepared: {exc}"[:300])
            return []

    async def _stage(self, batch: list[dict[str, Any]], proposals: list[Proposal],
                     facts: list[dict[str, Any]], report: RunReport, group: Group,
                     cortex: str, model: str) -> list[Staged]:
        """A valid answer's new facts, scored, staged in ``group`` (shown in a dry run).
        Anything this raises costs only its batch (``_batch``): an unpaired surrogate that
        reached ``fact_digest`` here failed every run before any batch was marked."""
        first = batch[0]["id"]
        keep = self._new_only(proposals, facts, report)
        scores = await self._scores(keep, first)
        if report.dry_run:
            report.add_proposed([
                {"text": p.text, "sources": list(p.sources), "supersedes": p.supersedes,
                 "cortex": cortex, "model": model,
                 **({IMPORTANCE: scores[i]} if scores else {})} for i, p in enumerate(keep)])
            return []
        # one bucket for a group and the next ones: one change to one shard (§12.4.5)
        bucket = self._bucket
        staged = [Staged(fact_id_in_bucket(bucket), p, cortex, model,
                         scores[i] if scores is not None else None)
                  for i, p in enumerate(keep)]
        group.facts.extend(staged)
        group.seen.extend(r["id"] for r in batch)
        group.entries += len(batch)
        return staged

    def _rejected(self, report: RunReport, first: str, why: str) -> None:
        self.counts["rejected_answers"] += 1
        report.rejected_answers.append(why)
        log.warning("consolidation: answer for the batch from %s rejected, nothing written: %s",
                    first, why)

    def _new_only(self, proposals: list[Proposal], facts: list[dict[str, Any]],
                  report: RunReport) -> list[Proposal]:
        """Drop facts already known, rejected before, or repeated within the answer."""
        known = {fact_digest(f["text"]) for f in facts}
        rejected = self.rejections.known([p.digest for p in proposals])
        out = []
        for p in proposals:
            if p.digest in known or p.digest in rejected:
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

    async def _scores(self, keep: list[Proposal], first: str) -> list[float] | None:
        """The salience cortex's score of each fact about to be written (SPEC-006 §12.5.4),
        or None: not configured, nothing to score, or an answer that breaks any rule."""
        if not keep or not self.config.salience_cortex:
            return None
        body = {"model": self.config.salience_cortex, "stream": False, "messages": [
            {"role": "system", "content": SCORE_INSTRUCTIONS},
            {"role": "user", "content": request_payload([p.text for p in keep])},
        ]}
        try:
            candidate, answer = await self.router.complete(self.router.plan(body))
            if candidate.cortex.kind != SALIENCE_KIND:
                raise BadAnswer(f"cortex {candidate.cortex.name} is of kind "
                                f"{candidate.cortex.kind}, not {SALIENCE_KIND}")
            return parse_scores(message_text(answer), len(keep))
        except Exception as exc:  # BadAnswer, the router's refusals, timeouts, no route
            self.counts["salience_rejected"] += 1
            log.warning("consolidation: salience scores for the batch from %s discarded, facts "
                        "written without them: %s", first, str(exc)[:300])
            return None

    def _mark_seen(self) -> None:
        """Write the watermark of the batches written since the last time, in one Runtime
        transaction. Lost (a crash, a full disk), it only makes the next run ask again about
        entries that gave no fact: those that did are cited by one (§12.2.1)."""
        if not self._unmarked:
            return
        keys, self._unmarked = self._unmarked, []
        try:
            with self._env.begin(write=True, db=self._kv) as txn:
                for key in keys:
                    txn.put(SEEN + key.encode(), b"1")
        except lmdb.Error as exc:
            log.warning("consolidation watermark of %d entries not written: %s", len(keys), exc)

    def _write_group(self, group: Group, report: RunReport) -> None:
        """``_write``, whose failure costs only this group: its batches stay unprocessed and
        are asked again at the next run, and the run goes on with the next ones (§12.2.2)."""
        try:
            self._write(group, report)
        except Exception as exc:
            log.exception("consolidation: a group of %d entries from %s not written",
                          group.entries, group.seen[0] if group.seen else "-")
            self.counts["rejected_answers"] += 1
            report.rejected_answers.append(f"the facts could not be written: {exc}"[:300])

    def _write(self, group: Group, report: RunReport) -> None:
        """Write a group's facts in one signed change with their signed fields and the
        supersession each proposes. Ordered like the batches; nothing of a group is written if this
        raises (its batches are tried again at the next run)."""
        if not group.seen:
            return
        at = now_iso()
        items, extra, fields_of = [], {}, {}
        # the entries the extra edits write, per shard, so the search index reads those alone
        # instead of the whole shard on each group (issue 14: 100-190 ms on the event loop);
        # the new facts' own signed fields need no name: they are the entries created
        extra_ids: dict[str, list[str]] = {}
        for s in group.facts:
            p = s.proposal
            fields: dict[str, Any] = {"sources": list(p.sources), "cortex": s.cortex,
                                      "model": s.model, "valid_from": at}
            if s.score is not None:
                fields[IMPORTANCE] = s.score
            fields_of[s.id] = fields
            item: dict[str, Any] = {"id": s.id, "text": p.text, "kind": "fact",
                                    "tags": list(dict.fromkeys(
                                        [CONSOLIDATED, PENDING, *p.tags]))}
            edits: list[Edit] = [set_fields(s.id, fields)]
            extra.setdefault(shard_of(s.id), []).extend(edits)
            extra_ids.setdefault(shard_of(s.id), [])
            if p.supersedes:
                # a proposal only: the older fact is marked when a person accepts this one
                # (accept_fact, §12.4.1), so a hostile answer cannot hide it meanwhile
                item["supersedes"] = p.supersedes
            items.append(item)
        # the index rows carry the signed fields (the log length the index upkeep compares is
        # the same without them) and are written with the node's next index write
        rows = (self.memory.add_many(items, extra=extra, row_fields=fields_of,
                                     extra_ids=extra_ids) if items else [])
        self._unmarked.extend(group.seen)
        report.add_written(rows)
        self._in_bucket += len(rows)
        if self._in_bucket >= BUCKET_FACTS:
            self._bucket, self._in_bucket = (self._bucket + 1) % BUCKETS, 0
        if rows:
            self.counts["facts_written"] += len(rows)
            log.info("consolidation: %d fact(s) written from %d entries", len(rows),
                     group.entries)

    # -- review ----------------------------------------------------------------------------------
    def pending_review(self) -> list[dict[str, Any]]:
        return self.memory.list(kind="fact", tag=PENDING, limit=ALL)

    def review_page(self) -> tuple[list[dict[str, Any]], int]:
        """The newest REVIEW_PAGE pending facts with their sources, and how many are pending:
        a member's device can sign any number of pending facts, and each shown costs up to 50
        source reads (SPEC-006 §12.4.3)."""
        facts = self.pending_review()
        return self.with_source_entries(facts[:REVIEW_PAGE]), len(facts)

    def with_source_entries(self, facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each fact with ``source_entries``: the id, kind and text (cut to 4,000 characters)
        of each source, or ``found: false``, so a reviewer sees what a fact came from in one
        read that counts no recall (SPEC-006 §12.4.3). A member's odd ``sources`` shape gives
        an empty list."""
        seen: dict[str, dict[str, Any]] = {}
        out = []
        for fact in facts:
            sources = fact.get("sources")
            ids = [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []
            for sid in ids[:MAX_SOURCES]:
                if sid not in seen:
                    try:
                        row = self.memory.get(sid)
                        seen[sid] = {"id": sid, "found": True, "kind": row["kind"],
                                     "text": row["text"][:MAX_SOURCE_TEXT]}
                    except EntryNotFound:
                        seen[sid] = {"id": sid[:64], "found": False}
            out.append({**fact, "source_entries": [seen[s] for s in ids[:MAX_SOURCES]]})
        return out

    def review(self, entry_id: str, action: str, text: str | None = None) -> dict[str, Any]:
        entry = self.memory.get(entry_id)  # EntryNotFound
        if entry["kind"] != "fact" or PENDING not in entry["tags"]:
            raise ValueError(f"{entry_id} is not a fact pending review")
        # accepting is what makes a proposed supersession take effect (§12.4.1)
        if action == "accept":
            return accept_fact(self.memory, entry_id, PENDING)
        if action == "edit":
            if not text:
                raise ValueError("edit needs the new text")
            return accept_fact(self.memory, entry_id, PENDING, text)
        if action == "reject":
            digest = fact_digest(entry["text"])
            out = reject_fact(self.memory, entry_id, digest)
            self.rejections.remember([digest])  # at once; the index upkeep would find it too
            return out
        raise ValueError("action must be accept, edit or reject")

    def status(self) -> dict[str, Any]:
        return {"enabled": self.config.enabled, "cortex": self.config.cortex,
                "interval_s": self.config.interval_s, "last_run": self.last_run,
                "running": self._lock.locked(), **self.counts}
