"""Restoring files and folders from a volume to a folder.

Nothing is ever written outside the destination, whatever the guest names are
(design section 6): every guest name becomes one safe path *component*
(names.safe_name), never a path; every write goes through writer.py, relative
to a directory descriptor and never through a link; guest links are never
followed nor recreated; folder loops in a damaged file system are cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any

from storage.engine.errors import EngineError
from storage.vdisk.filesystems import Adapter, Child, NodeInfo

from .browse import fs_errors, join_path, resolve, split_path
from .errors import CopyCancelled, DestinationError, ItemLevelError, ItemNotFound, NotADirectory
from .names import NameRegistry, NameStyle, SafeName, printable, safe_name
from .volumes import Volume, mount
from .writer import (
    DIR_FLAGS,
    CancelFn,
    CopyState,
    Exists,
    ItemResult,
    ItemStatus,
    ProgressFn,
    ThrottleFn,
    lexists,
    open_destination,
    raise_if_fatal,
    set_times,
)

MAX_DEPTH = 256
LINK_REASON = "it is a link to {target!r}; links are never followed or recreated"
SPECIAL_REASON = "it is a special file (device, pipe or socket) and holds no data"
LOOP_REASON = "this folder was already restored (a folder loop or a linked folder)"
EXISTS_REASON = "an item with that name already exists at the destination"
DAMAGED_PART = "only the items before the damage were restored"
DAMAGED_LISTING = f"the folder's listing is damaged; {DAMAGED_PART}"


class Conflict(StrEnum):
    """What to do when the destination already has an item with the same name."""

    RENAME = "rename"  # keep both: the restored item becomes "name~2.ext" (never touches existing data)
    SKIP = "skip"  # keep the existing item, skip the restored one
    OVERWRITE = "overwrite"  # replace files; merge into existing folders


def _children(fs: Adapter, node: Any) -> Iterator[Child | Exception]:
    """Children, yielding the exception instead of raising when the listing breaks off."""
    it = iter(fs.children(node))
    while True:
        try:
            child = next(it)
        except StopIteration:
            return
        except Exception as exc:
            yield exc
            return
        yield child


class _Copier:
    def __init__(self, volume: Volume, style: NameStyle, conflict: Conflict, durable: bool, state: CopyState):
        self.volume = volume
        self.fs = mount(volume)
        self.style = style
        self.conflict = conflict
        self.durable = durable
        self.state = state
        self.registries: dict[tuple[str, ...], NameRegistry] = {}
        self.visited: set[int] = set()

    def guard(self, src: str) -> contextlib.AbstractContextManager[None]:
        return fs_errors(self.volume, f"reading {printable(src)!r}")

    def count(self, node: Any, info: NodeInfo, seen: set[int], depth: int = 0) -> tuple[int, int]:
        """(items, bytes) below ``node``, for the progress bar's totals."""
        if info.kind != "dir":
            return 1, info.size if info.kind == "file" and not info.unreadable else 0
        if info.node_id is not None:
            if info.node_id in seen:
                return 1, 0
            seen.add(info.node_id)
        items, size = 1, 0
        for child in _children(self.fs, node) if depth < MAX_DEPTH else ():
            if isinstance(child, Exception) or child.error is not None:
                items += 1
                continue
            try:
                child_info = self.fs.info(child.node)
            except EngineError:
                raise
            except Exception:
                items += 1
                continue
            i, s = self.count(child.node, child_info, seen, depth + 1)
            items, size = items + i, size + s
        return items, size

    def place(
        self, dir_fd: int, rel: tuple[str, ...], original: str, kind: str
    ) -> tuple[SafeName, str] | None:
        """(safe name, "new" / "replace" / "merge") for an item in folder ``rel``; None to skip it."""
        registry = self.registries.setdefault(rel, NameRegistry(self.style))
        safe = registry.claim(safe_name(original, self.style))
        existing = lexists(safe.name, dir_fd)
        if existing is None:
            return safe, "new"
        if self.conflict is Conflict.SKIP:
            return None
        is_dir = stat_mod.S_ISDIR(existing.st_mode)
        if self.conflict is Conflict.OVERWRITE:
            if kind == "dir" and not is_dir:
                raise Exists(f"{printable(safe.name)!r} exists at the destination and is not a folder")
            if kind != "dir" and is_dir:
                raise Exists(f"a folder named {printable(safe.name)!r} exists at the destination")
            return safe, "merge" if is_dir else "replace"
        base = safe
        while True:
            safe = registry.variant(base, "was already taken by an item at the destination")
            if lexists(safe.name, dir_fd) is None:
                return safe, "new"

    def copy(
        self, node: Any, info: NodeInfo, name: str, src: str, dir_fd: int, rel: tuple[str, ...], depth: int
    ):
        self.state.check_cancel()
        kind = info.kind
        if kind == "link":
            return self.state.skip(src, kind, LINK_REASON.format(target=printable(info.link_target or "?")))
        if kind == "other":
            return self.state.skip(src, kind, SPECIAL_REASON)
        if info.unreadable:
            return self.state.fail(src, kind, f"cannot be read: {info.unreadable}")
        if kind == "dir" and info.node_id is not None and info.node_id in self.visited:
            return self.state.skip(src, kind, LOOP_REASON)
        try:
            placed = self.place(dir_fd, rel, name, kind)
        except Exists as exc:
            return self.state.fail(src, kind, str(exc))
        if placed is None:
            return self.state.skip(src, kind, EXISTS_REASON)
        safe, action = placed
        target = "/".join((*rel, safe.name))
        notes = (safe.note(),) if safe.changed else ()
        if kind == "file":
            return self._copy_file(node, info, src, dir_fd, safe.name, action == "replace", target, notes)
        return self._copy_dir(node, info, src, dir_fd, safe.name, action, (*rel, safe.name), notes, depth)

    def _copy_file(
        self,
        node: Any,
        info: NodeInfo,
        src: str,
        dir_fd: int,
        final: str,
        replace: bool,
        target: str,
        notes: Any,
    ) -> None:
        try:
            with self.guard(src):
                stream = self.fs.open(node)
            n = self.state.write_file(
                stream,
                info.size,
                dir_fd,
                final,
                replace=replace,
                info=info,
                durable=self.durable,
                label=src,
                guard=lambda: self.guard(src),
            )
        except CopyCancelled:
            raise
        except Exists:
            return self.state.fail(src, "file", "an item with that name appeared at the destination", notes)
        except ItemLevelError as exc:
            return self.state.fail(src, "file", str(exc), notes)
        except OSError as exc:
            raise_if_fatal(exc)
            return self.state.fail(src, "file", f"cannot write it: {exc.strerror or exc}", notes)
        self.state.add(ItemResult(src, "file", ItemStatus.OK, target, n, "", notes))

    def _copy_dir(
        self,
        node: Any,
        info: NodeInfo,
        src: str,
        dir_fd: int,
        final: str,
        action: str,
        rel: tuple,
        notes: Any,
        depth,
    ) -> None:
        if info.node_id is not None:
            self.visited.add(info.node_id)
        try:
            if action == "new":
                os.mkdir(final, 0o755, dir_fd=dir_fd)
            child_fd = os.open(final, DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise_if_fatal(exc)
            if exc.errno == errno.ELOOP:
                return self.state.fail(src, "dir", "it exists at the destination as a link", notes)
            return self.state.fail(src, "dir", f"cannot create the folder: {exc.strerror or exc}", notes)
        try:
            at = self.state.add(ItemResult(src, "dir", ItemStatus.OK, "/".join(rel), 0, "", notes))
            if depth >= MAX_DEPTH:
                reason = f"folders are nested deeper than {MAX_DEPTH} levels"
                self.state.results[at] = ItemResult(
                    src, "dir", ItemStatus.FAILED, "/".join(rel), 0, reason, notes
                )
                return
            broken = self.copy_children(node, src, child_fd, rel, depth)
            if broken:
                self.state.results[at] = ItemResult(
                    src, "dir", ItemStatus.FAILED, "/".join(rel), 0, broken, notes
                )
            set_times(child_fd, info)
        finally:
            os.close(child_fd)

    def copy_children(self, node: Any, src: str, dir_fd: int, rel: tuple[str, ...], depth: int) -> str:
        """Copy every child of ``node`` into ``dir_fd``; the reason when the listing broke off, else ""."""
        for child in _children(self.fs, node):
            if isinstance(child, EngineError):
                return f"the backup data of this folder's listing is damaged ({child}); {DAMAGED_PART}"
            if isinstance(child, Exception):
                return DAMAGED_LISTING
            child_src = f"{src.rstrip('/')}/{child.name}"
            if child.error is not None:
                self.state.fail(child_src, "file", f"cannot be read: {child.error}")
                continue
            try:
                with self.guard(child_src):
                    child_info = self.fs.info(child.node)
            except ItemLevelError as exc:
                self.state.fail(child_src, "file", str(exc))
                continue
            self.copy(child.node, child_info, child.name, child_src, dir_fd, rel, depth + 1)
        return ""


def _normalise_selection(paths: Iterable[str]) -> list[list[str]]:
    if isinstance(paths, str):
        raise TypeError("paths must be a list of paths, not one string")
    chosen: list[list[str]] = []
    for parts in sorted((split_path(p) for p in paths), key=len):
        if not any(parts[: len(c)] == c for c in chosen):  # skip items inside a selected folder
            chosen.append(parts)
    return chosen


def _ensure_dirs(copier: _Copier, root_fd: int, parts: list[str]) -> tuple[int, tuple[str, ...]]:
    """Folders for the original path (``keep_path``): made or reused, never through a link."""
    fd = os.dup(root_fd)
    rel: tuple[str, ...] = ()
    try:
        for part in parts:
            registry = copier.registries.setdefault(rel, NameRegistry(copier.style))
            name = registry.claim(safe_name(part, copier.style)).name
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd, rel = nfd, (*rel, name)
    except BaseException:
        os.close(fd)
        raise
    return fd, rel


def copy_items(
    volume: Volume,
    paths: Iterable[str],
    destination_dir: str | os.PathLike[str],
    *,
    style: NameStyle = NameStyle.POSIX,
    on_conflict: Conflict = Conflict.RENAME,
    keep_path: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    throttle: ThrottleFn | None = None,
    durable: bool = True,
) -> list[ItemResult]:
    """Copy files and folders (recursively) from ``volume`` into ``destination_dir``.

    Each selected item lands directly in the destination under its (safe) name, or
    under its original folder path with ``keep_path``; selecting ``/`` restores the
    volume's contents. Returns one result per item visited. ``CopyCancelled`` and
    ``DestinationError`` (both carry ``.results``) stop the copy; problems with
    single items never do.
    """
    selection = _normalise_selection(paths)
    state = CopyState(progress, cancel, throttle)
    copier = _Copier(volume, NameStyle(style), Conflict(on_conflict), durable, state)
    root_fd = open_destination(destination_dir)
    try:
        _copy_selection(volume, copier, state, selection, root_fd, keep_path)
    except (CopyCancelled, DestinationError) as exc:
        exc.results = state.results
        raise
    finally:
        os.close(root_fd)
    state.report("", force=True)
    return state.results


def _copy_selection(
    volume: Volume,
    copier: _Copier,
    state: CopyState,
    selection: list[list[str]],
    root_fd: int,
    keep_path: bool,
) -> None:
    try:
        targets: list[tuple[list[str], Any, NodeInfo | None, str]] = []
        for parts in selection:
            try:  # resolve() gives back the names as stored (the selection may differ in case)
                _, found, found_info, stored = resolve(volume, join_path(parts))
            except (ItemNotFound, NotADirectory) as exc:
                targets.append((parts, None, None, str(exc)))
                continue
            targets.append((stored, found, found_info, ""))
        seen: set[int] = set()
        for parts, node, info, _ in targets:
            if info is not None:
                with fs_errors(volume, f"counting {printable(join_path(parts))!r}"):
                    items, size = copier.count(node, info, seen)
                state.items_total += items
                state.bytes_total += size
        state.report("", force=True)
        for parts, node, info, error in targets:
            src = join_path(parts)
            if info is None:
                state.fail(src, "file", error)
            elif not parts:  # the volume root: its contents go straight into the destination
                if info.node_id is not None:
                    copier.visited.add(info.node_id)
                broken = copier.copy_children(node, "/", root_fd, (), 0)
                if broken:
                    state.fail("/", "dir", broken)
            else:
                try:
                    fd, rel = (
                        _ensure_dirs(copier, root_fd, parts[:-1]) if keep_path else (os.dup(root_fd), ())
                    )
                except OSError as exc:
                    raise_if_fatal(exc)
                    state.fail(
                        src, info.kind, f"cannot create its original folder path: {exc.strerror or exc}"
                    )
                    continue
                try:
                    copier.copy(node, info, parts[-1], src, fd, rel, 0)
                finally:
                    os.close(fd)
    except OSError as exc:
        raise_if_fatal(exc)
        raise DestinationError(f"cannot write to the destination: {exc.strerror or exc}") from exc
