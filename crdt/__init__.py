"""Signed CRDT documents, their LMDB store and their sync protocol.

This package knows nothing of HTTP, mDNS or sockets: ``node/`` drives it only through the names
exported here (``tests/test_architecture.py`` holds ``node/`` to that), so what lies behind them
may change without touching the node.
"""

from .chunks import CHUNK_CHANGE, inflate_change
from .docids import MEMORY_KINDS
from .documents import DeviceRevoked, Repo, SchemaTooNew, valid_doc_id
from .history import ChangeIndex, ChangeIndexCache, op_id_parts, value_at, visible_ids
from .identity import (
    IDENTITY_DOC,
    PROFILE_FIELDS,
    NoMeshError,
    ProfileError,
    accept_invitation,
    create_mesh,
    cutoff_heads,
    enrol_device,
    get_profile,
    import_roster_from_doc,
    join_request,
    mesh_info,
    open_repo,
    parse_invitation,
    parse_join_request,
    record_certs,
    revoke_device,
    stored_mesh_id,
    update_profile,
)
from .keys import (
    DeviceIdError,
    DeviceKey,
    KeyFileError,
    device_id,
    normalize_device_id,
    verify_signature,
)
from .roster import CertError, Roster, actor_key, decode_cert, new_endorsement, new_tombstone
from .store import (
    LAYERS,
    LayerView,
    StorageFull,
    Store,
    StoreError,
    format_version,
    fsync_path,
    layer_of,
)
from .sync import ROSTER_CODES, PeerSync
from .verify import Rejected, verify_changes

__all__ = [
    "CHUNK_CHANGE",
    "IDENTITY_DOC",
    "LAYERS",
    "MEMORY_KINDS",
    "PROFILE_FIELDS",
    "ROSTER_CODES",
    "CertError",
    "ChangeIndex",
    "ChangeIndexCache",
    "DeviceIdError",
    "DeviceKey",
    "DeviceRevoked",
    "KeyFileError",
    "LayerView",
    "NoMeshError",
    "PeerSync",
    "ProfileError",
    "Rejected",
    "Repo",
    "Roster",
    "SchemaTooNew",
    "StorageFull",
    "Store",
    "StoreError",
    "accept_invitation",
    "actor_key",
    "create_mesh",
    "cutoff_heads",
    "decode_cert",
    "device_id",
    "enrol_device",
    "format_version",
    "fsync_path",
    "get_profile",
    "import_roster_from_doc",
    "inflate_change",
    "join_request",
    "layer_of",
    "mesh_info",
    "new_endorsement",
    "new_tombstone",
    "normalize_device_id",
    "op_id_parts",
    "open_repo",
    "parse_invitation",
    "parse_join_request",
    "record_certs",
    "revoke_device",
    "stored_mesh_id",
    "update_profile",
    "valid_doc_id",
    "value_at",
    "verify_changes",
    "verify_signature",
    "visible_ids",
]
