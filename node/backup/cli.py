"""``maia backup``: init, create, verify, list, restore, prune and forget-device-key
(SPEC-002). Registered through node.cli.COMMAND_MODULES; heavy imports stay inside commands.

Passphrases come from ``--passphrase-file``, else ``MAIA_BACKUP_PASSPHRASE``, else the cached
key (``keys/backup.key``), else a prompt at the terminal (never echoed). Scripts and tests use
the first two; a person types it.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from crdt import DeviceKey, Store, StoreError

from ..cli.client import ApiError, NodeClient, NodeNotRunning
from ..cli.common import UserError, print_json, say
from ..config import NodeConfig, Paths
from .anchors import check_rollback
from .create import create_backup
from .crypto import seal_device_key
from .format import BACKED_UP_LAYERS, BackupError, Cancelled, Corrupt
from .repository import Repository
from .restore import restore_backup
from .retention import prune
from .runtime_status import record_verified_offline
from .settings import BackupSettings, load_cached_key, save_cached_key
from .verify import verify_backup

log = logging.getLogger(__name__)

ENV_PASSPHRASE = "MAIA_BACKUP_PASSPHRASE"
ENV_KEY_PASSPHRASE = "MAIA_DEVICE_KEY_PASSPHRASE"
ENV_NEW_PASSPHRASE = "MAIA_BACKUP_NEW_PASSPHRASE"


# -- registration ------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    s = subparsers.add_parser(
        "backup", help="back up, verify, list, restore and prune backups of identity and memory",
        description="Encrypted, incremental backups of the Identity and Memory layers, verified "
        "by restoring them (SPEC-002). Runtime is never backed up; it is rebuilt.",
    )
    sub = s.add_subparsers(dest="backup_cmd", required=True,
                           metavar="init|create|verify|list|restore|prune|forget-device-key|"
                           "change-passphrase")

    def common(p: argparse.ArgumentParser, *, to: bool = False) -> None:
        names = ["--repo", "--to"] if to else ["--repo"]
        p.add_argument(*names, dest="repo", metavar="DIR",
                       help="the backup repository (default: [backup] target in config.toml)")
        p.add_argument("--passphrase-file", metavar="FILE",
                       help=f"read the repository passphrase from FILE (or set {ENV_PASSPHRASE})")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("init", help="create a backup repository in an empty or new directory")
    common(p, to=True)
    p.add_argument("--kdf", choices=["moderate", "interactive"], default="moderate",
                   help="argon2id cost (default moderate; interactive for slow machines)")
    p.add_argument("--remember-key", action="store_true",
                   help="cache the repository key in keys/backup.key for scheduled backups")

    p = sub.add_parser("create", help="take a backup (incremental after the first one)")
    common(p, to=True)
    p.add_argument("--include-device-key", "--include-key", dest="include_device_key",
                   action="store_true",
                   help="also back up this device's private key, sealed with its own passphrase")
    p.add_argument("--device-key-passphrase-file", metavar="FILE",
                   help=f"read the device-key passphrase from FILE (or set {ENV_KEY_PASSPHRASE})")
    p.add_argument("--remember-key", action="store_true",
                   help="cache the repository key in keys/backup.key for scheduled backups")
    p.add_argument("--break-lock", action="store_true",
                   help="remove another host's lock that is older than 24 h")

    p = sub.add_parser("verify", help="restore a backup into a temporary dir and check it all")
    common(p)
    p.add_argument("id", nargs="?", help="backup id (or a unique prefix); default: the newest")
    p.add_argument("--latest", action="store_true", help="the newest backup (the default)")
    p.add_argument("--all", action="store_true", help="every backup in the repository")

    p = sub.add_parser("list", help="backups with their size, layers and verification")
    common(p)

    p = sub.add_parser("restore", help="restore a backup into an empty data dir")
    p.add_argument("id", nargs="?", help="backup id (or a unique prefix); default: the newest")
    p.add_argument("--repo", "--from", dest="repo", metavar="DIR",
                   help="the backup repository (default: [backup] target in config.toml)")
    p.add_argument("--to", dest="data_to", metavar="DATA_DIR",
                   help="the data dir to restore into (default: this data dir)")
    p.add_argument("--force", action="store_true",
                   help="restore over an existing data dir, moving it to pre-restore-<time>/")
    p.add_argument("--with-device-key", action="store_true",
                   help="unseal the backed-up device key to hand over to a new key (no member "
                   "reachable)")
    p.add_argument("--device-key-passphrase-file", metavar="FILE")
    p.add_argument("--allow-other-mesh", action="store_true",
                   help="with --force: replace a data dir of another mesh than the backup's")
    p.add_argument("--allow-rollback", action="store_true",
                   help="restore even though the repository lost backups this data dir "
                   "remembers (newer ones deleted, or an older copy of the target)")
    p.add_argument("--passphrase-file", metavar="FILE")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("prune", help="delete backups the [backup] keep_* rule does not keep")
    common(p)
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument("--break-lock", action="store_true",
                   help="remove another host's lock that is older than 24 h")

    p = sub.add_parser("forget-device-key",
                       help="take a backup without the device key (later ones carry none)")
    common(p, to=True)

    p = sub.add_parser("change-passphrase",
                       help="re-wrap the repository key under a new passphrase")
    common(p)
    p.add_argument("--new-passphrase-file", metavar="FILE",
                   help=f"read the new passphrase from FILE (or set {ENV_NEW_PASSPHRASE})")

    p = sub.add_parser("scheduled-run",
                       help="one scheduled run: create, verify, prune (run by the node)")
    p.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace, paths: Paths) -> int:
    handlers = {
        "init": _init, "create": _create, "verify": _verify, "list": _list,
        "restore": _restore, "prune": _prune, "forget-device-key": _forget,
        "change-passphrase": _change_passphrase, "scheduled-run": _scheduled_run,
    }
    try:
        return handlers[args.backup_cmd](args, paths)
    except (BackupError, StoreError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # e.g. a NAS that went away mid-command
        where = f"{exc.filename}: " if exc.filename else ""
        raise UserError(f"{where}{exc.strerror or exc}") from None
    finally:
        _Progress.end_line()


# -- shared helpers ----------------------------------------------------------------------------
def _read_secret_file(path: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if not data:
        raise UserError(f"{path} is empty; an empty passphrase is not accepted")
    return data


def _given(file: str | None, env: str) -> bytes | None:
    if file:
        return _read_secret_file(file)
    value = os.environ.get(env)
    if value is not None:
        if not value:
            raise UserError(f"{env} is empty; an empty passphrase is not accepted")
        return value.encode()
    return None


def _prompt(label: str, *, confirm: bool, env: str, flag: str) -> bytes:
    if not sys.stdin.isatty():
        raise UserError(f"no passphrase given: type it at a terminal, set {env}, or use {flag}")
    first = getpass.getpass(f"{label}: ")
    if not first:
        raise UserError("an empty passphrase is not accepted")
    if confirm and getpass.getpass(f"{label} (again): ") != first:
        raise UserError("the two passphrases differ; nothing was changed")
    return first.encode()


def _repo_path(args: argparse.Namespace, paths: Paths) -> Path:
    if getattr(args, "repo", None):
        return Path(args.repo).expanduser().absolute()

    target = BackupSettings.from_config(NodeConfig.load(paths.config)).target
    if target is None:
        raise UserError("say which backup repository: --repo DIR (--to DIR), or set "
                        "[backup] target in config.toml")
    return target.absolute()


def _open_repo(args: argparse.Namespace, paths: Paths, path: Path):
    passphrase = _given(args.passphrase_file, ENV_PASSPHRASE)
    if passphrase is None:
        cached = load_cached_key(paths, Repository.read_info(path)["repo_id"])
        if cached is not None:
            return Repository.open(path, master=cached)
        passphrase = _prompt(f"Passphrase for backup repository {path}", confirm=False,
                             env=ENV_PASSPHRASE, flag="--passphrase-file")
    return Repository.open(path, passphrase=passphrase)


def _device_key_passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes:
    given = _given(args.device_key_passphrase_file, ENV_KEY_PASSPHRASE)
    if given is not None:
        return given
    return _prompt("Passphrase for the device key (separate from the repository's)",
                   confirm=confirm, env=ENV_KEY_PASSPHRASE, flag="--device-key-passphrase-file")


def _remember(paths: Paths, repo) -> None:
    if not paths.root.is_dir():
        raise UserError(f"there is no data dir at {paths.root} to keep the key in")
    path = save_cached_key(paths, repo.repo_id, repo.master_key)
    say(f"Cached the repository key in {path} for scheduled backups.")


def _this_device(paths: Paths) -> str:
    return DeviceKey.load(paths.key).device_id


class _Progress:
    """Progress on stderr: one updating line at a terminal, a line every few seconds else."""

    line_open = False  # a terminal line still waiting for its newline

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    @classmethod
    def end_line(cls) -> None:
        if cls.line_open:
            sys.stderr.write("\n")
            cls.line_open = False

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        final = done >= total
        if self.tty:
            sys.stderr.write(f"\r{self.verb} {what}: {done}/{total}" + ("\n" if final else ""))
            _Progress.line_open = not final
        elif final or now - self.last >= 5:
            sys.stderr.write(f"{self.verb} {what}: {done}/{total}\n")
            self.last = now
        sys.stderr.flush()


def _warn(text: str) -> None:
    _Progress.end_line()
    sys.stderr.write(f"maia: warning: {text}\n")
    sys.stderr.flush()


def _refused_json(catalog) -> list[dict[str, str]]:
    return [{"id": ref.id, "file": str(ref.path), "error": str(exc)}
            for ref, exc in catalog.refused]


def _check_target(repo, catalog, *roots: Path, quiet_unchecked: bool = True):
    """Refused manifests and the rollback check (SPEC-002 §5.5, §12.3), warned on stderr."""
    for ref, exc in catalog.refused:
        _warn(f"backup manifest {ref.path.name} is refused: {exc}")
    check = check_rollback(repo, catalog, *roots)
    if check.detected or (not check.checked and not quiet_unchecked):
        _warn(check.warning or "")
    return check


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def _open_store(paths: Paths):
    return Store(paths.root, readonly=True, layers=BACKED_UP_LAYERS)


# -- commands ----------------------------------------------------------------------------------
def _init(args: argparse.Namespace, paths: Paths) -> int:
    if not args.repo:
        raise UserError("say where to create the repository: maia backup init --to DIR")
    path = _repo_path(args, paths)
    passphrase = _given(args.passphrase_file, ENV_PASSPHRASE) or _prompt(
        f"New passphrase for backup repository {path}", confirm=True, env=ENV_PASSPHRASE,
        flag="--passphrase-file")
    repo = Repository.init(path, passphrase, kdf=args.kdf)
    say(f"Created backup repository {path} (id {repo.repo_id[:12]}).")
    if paths.config.is_file():
        cfg = NodeConfig.load(paths.config)
        table = cfg.extra.setdefault("backup", {})
        if not table.get("target"):
            table["target"] = str(path)
            cfg.save(paths.config)
            say(f"Set [backup] target = \"{path}\" in {paths.config}.")
    if args.remember_key:
        _remember(paths, repo)
    say("Keep the passphrase safe: without it nobody, you included, can read these backups.")
    return 0


def _create(args: argparse.Namespace, paths: Paths, *, forget: bool = False) -> int:
    path = _repo_path(args, paths)
    repo = _open_repo(args, paths, path)
    device = _this_device(paths)
    sealed = None
    if getattr(args, "include_device_key", False):
        sealed = seal_device_key(paths.key.read_bytes(),
                                 _device_key_passphrase(args, confirm=True))
    store = _open_store(paths)
    try:
        result = create_backup(
            store, repo, device=device, config_path=paths.config, sealed_device_key=sealed,
            forget_device_key=forget, progress=_Progress("backing up"),
            break_lock=getattr(args, "break_lock", False), anchor_root=paths.root,
        )
    finally:
        store.close()
    if getattr(args, "remember_key", False):
        _remember(paths, repo)
    if result.rollback and result.rollback["detected"]:
        _warn(str(result.rollback["warning"]))
    if args.json:
        print_json(result.summary())
        return 0
    say(f"Backup {result.manifest.id[:12]} taken into {path}: {result.changed_docs} document(s) "
        f"changed, {result.unchanged_docs} unchanged; {result.new_chunks} new chunk(s) "
        f"({_mib(result.new_bytes)}) written, {_mib(result.manifest.stored_bytes)} in all.")
    if sealed is not None:
        say("The device key is in this backup, sealed with its own passphrase.")
    elif forget:
        say("This backup holds no device key; older backups keep theirs until pruned.")
    say("It is unverified until restored: run 'maia backup verify'.")
    return 0


def _forget(args: argparse.Namespace, paths: Paths) -> int:
    return _create(args, paths, forget=True)


def _verify(args: argparse.Namespace, paths: Paths) -> int:
    path = _repo_path(args, paths)
    repo = _open_repo(args, paths, path)
    if not repo.manifests():
        raise UserError(f"there is no backup in {path} yet")
    catalog = repo.catalog()
    rollback = _check_target(repo, catalog, paths.root)
    if catalog.newest is None:  # every manifest is refused: that IS the verification's result
        ref, exc = catalog.refused[-1]
        raise UserError(f"backup {ref.id[:12]} FAILED verification: {exc}")
    if args.all:
        chosen = [ref for ref, _ in catalog.accepted]
    elif args.id:
        chosen = [repo.find(args.id)]
    else:
        chosen = [catalog.newest[0]]
    try:
        verifier = _this_device(paths)
    except Exception:
        verifier = ""  # verifying from a machine that is not (yet) a device
    results = []
    for ref in chosen:
        try:
            result = verify_backup(repo, ref, verifier=verifier, progress=_Progress("verifying"))
        except Corrupt as exc:
            raise UserError(f"backup {ref.id[:12]} FAILED verification: {exc}") from None
        results.append(result)
        _tell_node(paths, result.manifest_id, result.verified_at)
        if not args.json:
            c = result.counts
            say(f"Backup {ref.id[:12]} verified by restoring it: {c['documents']} document(s), "
                f"{c['changes']} change(s), {c['batches']} signed batch(es), {c['certs']} "
                f"certificate(s); every chunk, signature and head checked "
                f"({result.seconds:.1f} s).")
    if args.json:
        print_json({"verified": [r.summary() for r in results], "refused": _refused_json(catalog),
                    "rollback": rollback.as_json()})
    if catalog.refused:  # SPEC-002 §5.5: a refused manifest fails the repository's verification
        ref, exc = catalog.refused[-1]
        raise UserError(f"backup {ref.id[:12]} FAILED verification: {exc}"
                        + (f" (and {len(catalog.refused) - 1} more refused manifest(s))"
                           if len(catalog.refused) > 1 else ""))
    if rollback.detected:  # SPEC-002 §12.3
        raise UserError(f"{rollback.warning}; the backups that are there verified")
    return 0


def _tell_node(paths: Paths, manifest_id: str, verified_at: str) -> None:
    """Store last_verified in Runtime: through the running node, else directly (§7.2)."""
    try:
        NodeClient(paths).request("POST", "/v1/backup/verified",
                                  {"manifest": manifest_id, "verified_at": verified_at})
        return
    except NodeNotRunning:
        pass
    except ApiError as exc:
        log.warning("the node did not record the verification: %s", exc)
        return
    record_verified_offline(paths, manifest_id, verified_at)


def _list(args: argparse.Namespace, paths: Paths) -> int:
    path = _repo_path(args, paths)
    repo = _open_repo(args, paths, path)
    verified = repo.verified_ids()
    catalog = repo.catalog()  # newest first by authenticated created_at (SPEC-002 §5.5)
    rollback = _check_target(repo, catalog, paths.root)
    rows: list[dict[str, Any]] = []
    for ref, exc in reversed(catalog.refused):
        rows.append({"id": ref.id, "created_at": None, "verified_at": None,
                     "status": "refused" if isinstance(exc, Corrupt) else "unreadable",
                     "file": str(ref.path), "error": str(exc)})
    for ref, m in reversed(catalog.accepted):
        row: dict[str, Any] = {
            "id": ref.id, "created_at": None, "verified_at": verified.get(ref.id),
            "status": "verified" if ref.id in verified else "unverified",
        }
        row |= {
            "created_at": m.created_at,
            "device": m.device,
            "size_bytes": m.stored_bytes,
            "layers": {name: {"documents": len(layer.docs),
                              "changes": sum(d.changes for d in layer.docs.values())}
                       for name, layer in m.layers.items()},
            "device_key": m.device_key is not None,
            "parent": m.parent,
        }
        rows.append(row)
    rows.sort(key=lambda r: r["status"] in ("refused", "unreadable"))  # accepted ones first
    if args.json:
        print_json({"backups": rows, "rollback": rollback.as_json()})
        return 0
    if not rows:
        say(f"There is no backup in {path} yet: run 'maia backup create'.")
        return 0
    for r in rows:
        if r["status"] in ("refused", "unreadable"):
            say(f"{r['id'][:12]}  {r['status'].upper()}  {r['error']}")
            continue
        layers = ", ".join(f"{n} {v['documents']} doc(s)/{v['changes']} change(s)"
                           for n, v in r["layers"].items())
        state = f"verified {r['verified_at'][:19]}Z" if r["verified_at"] else "UNVERIFIED"
        key = "  +device key" if r["device_key"] else ""
        say(f"{r['id'][:12]}  {r['created_at'][:19]}Z  {r['device'][:7]}  "
            f"{_mib(r['size_bytes']):>10}  {layers}  {state}{key}")
    return 0


def _restore(args: argparse.Namespace, paths: Paths) -> int:
    path = _repo_path(args, paths)
    repo = _open_repo(args, paths, path)
    if not repo.manifests():
        raise UserError(f"there is no backup in {path} to restore")
    target = Path(args.data_to).expanduser() if args.data_to else paths.root
    catalog = repo.catalog()
    rollback = _check_target(repo, catalog, paths.root, target, quiet_unchecked=args.json)
    if args.id:
        ref = repo.find(args.id)
    elif catalog.newest is not None:
        ref = catalog.newest[0]  # the newest by authenticated created_at (SPEC-002 §5.5)
    else:
        raise catalog.refused[-1][1]
    if rollback.detected and not args.allow_rollback:  # SPEC-002 §12.4
        raise UserError(f"{rollback.warning}. Restore refused, nothing was written: check the "
                        f"target, then add --allow-rollback to restore from what is left")
    passphrase = _device_key_passphrase(args, confirm=False) if args.with_device_key else None
    result = restore_backup(repo, ref, target, force=args.force,
                            allow_other_mesh=args.allow_other_mesh,
                            device_key_passphrase=passphrase, progress=_Progress("restoring"))
    if args.json:
        print_json({"id": result.manifest_id, "target": str(result.target),
                    "device_id": result.device_id, "lost_device": result.lost_device,
                    "counts": result.counts, "handed_over": result.handed_over,
                    "kept_existing_key": result.kept_existing_key,
                    "moved_aside": str(result.moved_aside) if result.moved_aside else None,
                    "config_restored": result.config_restored,
                    "config_kept": result.config_kept, "merged_certs": result.merged_certs,
                    "quarantined": result.quarantined,
                    "refused": _refused_json(catalog), "rollback": rollback.as_json()})
        return 0
    c = result.counts
    say(f"Restored backup {result.manifest_id[:12]} into {result.target}: {c['documents']} "
        f"document(s), {c['changes']} change(s), every signature and head checked.")
    if result.moved_aside:
        say(f"The data that was there is kept in {result.moved_aside}.")
    _say_what_the_target_kept(result)
    if result.handed_over:
        say(f"The backed-up key endorsed this device's new key {result.device_id}, revoked "
            "itself and was discarded. Run 'maia up' to sync with the mesh.")
    elif result.kept_existing_key:
        say(f"This device keeps its key ({result.device_id}).")
    else:
        say(f"This device has a new key ({result.device_id}) and joins the mesh as a new "
            "device: run 'maia device request' here, 'maia device add ...' on a member, then "
            "'maia join ...' here.")
        say(f"Then, on a member, revoke the lost device: maia device revoke {result.lost_device} "
            "--keep-all (or --keep ID for each device it admitted that stays).")
    return 0


def _say_what_the_target_kept(result) -> None:
    """SPEC-002 §8.6, §8.7: what of the data dir survived the restore, so nobody wonders why
    the backup's config or a device it still lists did not come back."""
    if result.config_kept:
        say("This data dir keeps its own config.toml; the backup's was not restored (it is "
            "restored only into a data dir without one).")
    if result.merged_certs:
        say(f"{result.merged_certs} roster certificate(s) this data dir held and the backup "
            "did not were kept (revocations stay in force).")
    if result.quarantined:
        say(f"{result.quarantined} restored change(s) are not allowed by that roster (a "
            "revoked device's) and were quarantined.")


def _prune(args: argparse.Namespace, paths: Paths) -> int:
    path = _repo_path(args, paths)
    rule = BackupSettings.from_config(NodeConfig.load(paths.config)).rule
    repo = _open_repo(args, paths, path)
    plan = prune(repo, rule, dry_run=args.dry_run, break_lock=args.break_lock)
    if args.json:
        print_json(plan.summary() | {"dry_run": args.dry_run})
        return 0
    verb = "Would delete" if args.dry_run else "Deleted"
    say(f"{verb} {len(plan.delete)} backup(s) and {plan.chunks} chunk(s) "
        f"({_mib(plan.chunk_bytes)}); {len(plan.keep)} backup(s) kept "
        f"(rule: {rule.keep_daily} daily, {rule.keep_weekly} weekly, {rule.keep_monthly} "
        "monthly, and always the newest verified one).")
    for ref in plan.delete:
        say(f"  {verb.lower()} {ref.id[:12]}  {ref.created:%Y-%m-%d %H:%M:%S}Z")
    return 0


def _change_passphrase(args: argparse.Namespace, paths: Paths) -> int:
    path = _repo_path(args, paths)
    repo = _open_repo(args, paths, path)
    new = _given(args.new_passphrase_file, ENV_NEW_PASSPHRASE) or _prompt(
        f"New passphrase for backup repository {path}", confirm=True, env=ENV_NEW_PASSPHRASE,
        flag="--new-passphrase-file")
    repo.change_passphrase(new)
    say(f"The passphrase of {path} is changed; no backup was rewritten.")
    return 0


def _scheduled_run(args: argparse.Namespace, paths: Paths) -> int:
    """One scheduled run for the node (SPEC-002 §10.1): create, verify, prune, at low priority.
    Never adds a device key (§6.2). SIGTERM stops it cleanly: temporary files and the lock
    are removed and no manifest is written."""

    def stop(signum: int, frame: Any) -> None:
        raise Cancelled("the node stopped the scheduled backup; nothing was recorded")

    before = signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(OSError):
        os.nice(10)
    try:
        return _scheduled_steps(paths)
    finally:  # run in-process (a test), the caller's own SIGTERM handling comes back
        signal.signal(signal.SIGTERM, before)


def _scheduled_steps(paths: Paths) -> int:
    """Create, verify and prune; a failure is reported to the node as one JSON line."""
    try:
        settings = BackupSettings.from_config(NodeConfig.load(paths.config))
        if settings.target is None:
            raise BackupError("no [backup] target in config.toml")
        info = Repository.read_info(settings.target)
        master = load_cached_key(paths, info["repo_id"])
        if master is None:
            raise BackupError(f"no cached key for backup repository {settings.target}")
        repo = Repository.open(settings.target, master=master)
        device = _this_device(paths)
        store = _open_store(paths)
        try:
            created = create_backup(store, repo, device=device, config_path=paths.config,
                                    anchor_root=paths.root)
        finally:
            store.close()
        verified = verify_backup(repo, created.ref, verifier=device)
        plan = prune(repo, settings.rule)
    except Exception as exc:  # reported to the node, which logs and shows it
        print_json_line({"ok": False, "error": str(exc)})
        return 1
    print_json_line(created.summary() | {"ok": True, "verified_at": verified.verified_at,
                                          "pruned": len(plan.delete)})
    return 0


def print_json_line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
