"""``python -m storage.engine``: the engine without the web application.

Every failure is one line on stderr and a non-zero exit code (1 for engine
errors, 2 for usage errors, 130 when interrupted); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from .backup import Progress
from .datastore import Datastore
from .errors import EngineError
from .format import DEFAULT_CHUNK, DEFAULT_LEVEL
from .retention import RetentionPolicy
from .source import SourceFile
from .util import parse_size


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _key(args: argparse.Namespace) -> bytes | None:
    path = args.key_file or os.environ.get("HVBS_KEY_FILE")
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise EngineError(f"cannot read key file {path}: {exc.strerror}") from exc
    if not key:
        raise EngineError(f"key file {path} is empty")
    return key


def _open(args: argparse.Namespace) -> Datastore:
    return Datastore.open(args.datastore, key=_key(args))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _progress(p: Progress) -> None:
    pct = 100.0 * p.bytes_done / p.bytes_total if p.bytes_total else 100.0
    sys.stderr.write(
        f"\r{pct:5.1f}%  read {_human(p.bytes_read)}  new {_human(p.bytes_stored)}  {_human(p.rate)}/s   "
    )
    sys.stderr.flush()


def cmd_init(args: argparse.Namespace) -> int:
    key = None
    if args.encrypt:
        key = _key(args)
        if key is None:
            raise EngineError("--encrypt needs --key-file")
    ds = Datastore.create(args.datastore, chunk_size=args.chunk_size, compression_level=args.level, key=key)
    print(f"created datastore {ds.root} (chunk size {_human(ds.chunk_size)})")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    ds = _open(args)
    ranges: dict[str, Any] = {}
    if args.changed_ranges:
        try:
            with open(args.changed_ranges, encoding="utf-8") as f:
                ranges = json.load(f)
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot read changed ranges {args.changed_ranges}: {exc}") from exc
        if not isinstance(ranges, dict):
            raise EngineError("changed ranges file must map file names to [[offset, length]...]")
    sources = []
    for path in args.files:
        if args.base_dir:
            name = os.path.relpath(path, args.base_dir).replace(os.sep, "/")
        else:
            name = os.path.basename(path)
        rng = ranges.get(name)
        sources.append(
            SourceFile(name, path, changed_ranges=[tuple(r) for r in rng] if rng is not None else None)
        )
    unknown = set(ranges) - {s.name for s in sources}
    if unknown:
        raise EngineError(f"changed ranges given for unknown file {sorted(unknown)[0]!r}")
    parent: str | None = args.parent
    if parent == "none":
        parent = None
    metadata = json.loads(args.metadata) if args.metadata else {}
    info = ds.backup(
        args.vm_id or args.vm,
        sources,
        vm_name=args.vm,
        parent=parent,
        consistency=args.consistency,
        metadata=metadata,
        progress=_progress if args.progress else None,
    )
    if args.progress:
        sys.stderr.write("\n")
    print(info.id)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    ds = _open(args)
    res = ds.restore(
        args.point,
        args.target,
        files=args.file or None,
        progress=_progress if args.progress else None,
        durable=not args.no_fsync,
    )
    if args.progress:
        sys.stderr.write("\n")
    print(f"restored {len(res.files)} file(s), {_human(res.bytes_total)} in {res.duration:.1f}s")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    ds = _open(args)
    if args.point:
        p = ds.point(args.point)
        for f in p.files:
            print(f"{f.size:>16}  {f.name}")
        return 0
    pts = ds.points(args.vm)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": p.id,
                        "vm_id": p.vm_id,
                        "vm_name": p.vm_name,
                        "created": p.created.isoformat(),
                        "files": [{"name": f.name, "size": f.size} for f in p.files],
                        "total_bytes": p.total_bytes,
                        "bytes_new": p.bytes_new,
                        "consistency": p.consistency,
                        "parent": p.parent,
                        "metadata": p.metadata,
                        "damaged": p.damaged,
                    }
                    for p in pts
                ],
                indent=1,
            )
        )
        return 0
    for p in pts:
        flag = "DAMAGED" if p.damaged else ""
        print(
            f"{p.id}  {p.vm_name:<20} {p.created:%Y-%m-%d %H:%M:%S}  {len(p.files):>3} files  "
            f"{_human(p.total_bytes):>10}  new {_human(p.bytes_new):>10}  {flag}".rstrip()
        )
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    ds = _open(args)
    with ds.open_file(args.point, args.file) as r:
        out = sys.stdout.buffer
        shutil.copyfileobj(r, out, 1 << 20)  # type: ignore[misc]
        out.flush()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    ds = _open(args)
    rep = ds.verify(args.point or None)
    print(
        f"checked {rep.chunks_checked} chunks ({_human(rep.bytes_checked)}) in "
        f"{len(rep.points_checked)} points: {len(rep.bad_chunks)} bad, "
        f"{len(rep.missing_chunks)} missing, {len(rep.damaged_points)} damaged point(s)"
    )
    for p in rep.damaged_points:
        print(f"damaged: {p}")
    return 0 if rep.ok else 3


def cmd_prune(args: argparse.Namespace) -> int:
    ds = _open(args)
    policy = RetentionPolicy(
        keep_days=args.keep_days,
        keep_last=args.keep_last,
        keep_daily=args.keep_daily,
        keep_weekly=args.keep_weekly,
        keep_monthly=args.keep_monthly,
        keep_yearly=args.keep_yearly,
    )
    if policy == RetentionPolicy():
        raise EngineError("give at least one --keep-* option")
    removed = ds.prune(policy, dry_run=args.dry_run)
    for p in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {p.id} {p.vm_name}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    ds = _open(args)
    r = ds.gc(grace_seconds=args.grace_seconds)
    print(
        f"removed {r.chunks_removed} chunks ({_human(r.bytes_freed)}), {r.chunks_live} live, "
        f"{r.chunks_kept_recent} kept within the grace period"
    )
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    u = _open(args).usage()
    print(f"{u.points} points, {u.chunk_count} chunks, {_human(u.total_bytes)} on disk")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m storage.engine", description="Hyper-V backup datastore engine")
    p.add_argument("--key-file", help="file holding the encryption key (or $HVBS_KEY_FILE)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("datastore")
        sp.add_argument("--key-file", default=argparse.SUPPRESS)
        return sp

    sp = add("init", "create a datastore")
    sp.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK)
    sp.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="zstd level")
    sp.add_argument("--encrypt", action="store_true")
    sp.set_defaults(func=cmd_init)

    sp = add("backup", "back up files of one VM; prints the new recovery point id")
    sp.add_argument("--vm", required=True, help="VM name (also the VM id unless --vm-id)")
    sp.add_argument("--vm-id")
    sp.add_argument("--changed-ranges", help='JSON: {"name": [[offset, length], ...]}')
    sp.add_argument("--parent", default="latest", help="point id, 'latest' or 'none'")
    sp.add_argument("--consistency", default="crash", choices=["application", "crash", "file"])
    sp.add_argument("--base-dir", help="store names relative to this directory")
    sp.add_argument("--metadata", help="JSON object stored in the manifest")
    sp.add_argument("--progress", action="store_true")
    sp.add_argument("files", nargs="+")
    sp.set_defaults(func=cmd_backup)

    sp = add("restore", "restore a recovery point to a directory")
    sp.add_argument("point")
    sp.add_argument("target")
    sp.add_argument("--file", action="append", help="restore only this file (repeatable)")
    sp.add_argument("--progress", action="store_true")
    sp.add_argument("--no-fsync", action="store_true")
    sp.set_defaults(func=cmd_restore)

    sp = add("ls", "list recovery points (or the files of one)")
    sp.add_argument("point", nargs="?")
    sp.add_argument("--vm")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_ls)

    sp = add("cat", "write one file of a recovery point to stdout")
    sp.add_argument("point")
    sp.add_argument("file")
    sp.set_defaults(func=cmd_cat)

    sp = add("verify", "re-read and check chunks; exit code 3 when damage is found")
    sp.add_argument("--point", action="append")
    sp.set_defaults(func=cmd_verify)

    sp = add("prune", "delete recovery points outside the retention policy")
    sp.add_argument("--keep-days", type=float)
    sp.add_argument("--keep-last", type=int, default=0)
    sp.add_argument("--keep-daily", type=int, default=0)
    sp.add_argument("--keep-weekly", type=int, default=0)
    sp.add_argument("--keep-monthly", type=int, default=0)
    sp.add_argument("--keep-yearly", type=int, default=0)
    sp.add_argument("--dry-run", action="store_true")
    sp.set_defaults(func=cmd_prune)

    sp = add("gc", "remove chunks no recovery point references")
    sp.add_argument("--grace-seconds", type=float, default=3600.0)
    sp.set_defaults(func=cmd_gc)

    sp = add("usage", "space used by the datastore")
    sp.set_defaults(func=cmd_usage)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `cat ... | head`: the reader went away. Point stdout at /dev/null so the
        # interpreter's final flush does not print a second error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # last resort: still one line, never a traceback
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
