"""Document ids: which documents exist at all (SPEC-001 §6, SPEC-005 §10.1).

One rule, used by verification, the roster's cutoffs and the memory layer: the Identity
document, and memory shards ``memory/<kind>/<YYYY-MM>/<0-7>`` of the known kinds only. A member
cannot make a peer store documents under invented kinds or impossible months, which no reader
would ever list (issue 18.5).
"""

from __future__ import annotations

import re

MEMORY_KINDS = ("note", "conversation", "fact", "skill", "journal")
_MONTH = r"(19[7-9]\d|2\d{3})-(0[1-9]|1[0-2])"  # 1970-01 to 2999-12
_KIND = "(" + "|".join(MEMORY_KINDS) + ")"
DOC_ID_RE = re.compile(r"^(identity|memory/" + _KIND + "/" + _MONTH + r"/[0-7])\Z")


def valid_doc_id(doc_id: object) -> bool:
    # fullmatch: "$" would also match before a trailing newline (an id no reader lists).
    return isinstance(doc_id, str) and DOC_ID_RE.fullmatch(doc_id) is not None
