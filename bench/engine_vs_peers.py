"""Benchmark: this engine vs restic and borg on a realistic dynamic VHDX.

Run:  .venv/bin/python -m bench.engine_vs_peers [--size-gib 4] [--fill-gib 1.8] [--runs 3]
Memory check on a 4x larger disk (our engine only):
      .venv/bin/python -m bench.engine_vs_peers --size-gib 16 --fill-gib 7 --runs 1 --tools ours

The disk, made by the project's disk builder (storage/vdisk/builder.py): raw sparse
image -> GPT (sgdisk) with one NTFS partition made with mkntfs on a separate
partition file, filled with ntfscp, spliced into the disk -> qemu-img convert to
a dynamic VHDX. Every tool runs in a subprocess; the page cache is dropped before
each timed step; every timed step ends with `sync` (so deferred writeback is
counted for everybody). Steps of the tools are interleaved within each run, and
the tool order rotates between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.vdisk import builder  # noqa: E402 - path set up above
from storage.vdisk.mapping import virtual_to_file_ranges  # noqa: E402
from storage.vdisk.vhdx import PAYLOAD_BLOCK_FULLY_PRESENT, read_layout  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PY = sys.executable
ENV = {
    **os.environ,
    "RESTIC_PASSWORD": "bench-password",
    "BORG_PASSPHRASE": "",
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
}


# --------------------------------------------------------------------------- helpers
def run(cmd: Sequence[str | Path], cwd: Path | None = None, quiet: bool = True) -> None:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=ENV, capture_output=quiet)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace")[-2000:] if quiet else ""
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{err}")


def timed_rss(cmd: Sequence[str | Path], cwd: Path | None = None) -> tuple[float, int, str]:
    """Like ``timed`` but waits with wait4 to read this child's own ru_maxrss."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [str(c) for c in cmd], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert p.stdout is not None and p.stderr is not None
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    os.sync()
    dt = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{err.decode(errors='replace')}")
    return dt, usage.ru_maxrss * 1024, out.decode(errors="replace")


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(8 * MiB):
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------- disk
LOG_TEMPLATES = [
    "{ts} INFO  [{th}] GET /api/v1/orders/{n} 200 {ms}ms user={u}\n",
    "{ts} WARN  [{th}] slow query took {ms}ms: SELECT * FROM items WHERE id={n}\n",
    "{ts} DEBUG [{th}] cache miss key=session:{n:x} shard={u}\n",
    "{ts} ERROR [{th}] connection reset by peer 10.0.{u}.{ms} retry={n}\n",
]


def make_log(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    t = 1_700_000_000.0 + seed * 1000
    with open(path, "w") as f:
        written = 0
        while written < size:
            lines = []
            for _ in range(2000):
                t += rng.random() * 0.05
                ts = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
                lines.append(
                    rng.choice(LOG_TEMPLATES).format(
                        ts=ts,
                        th=f"worker-{rng.randrange(16)}",
                        n=rng.randrange(10**6),
                        ms=rng.randrange(250),
                        u=rng.randrange(200),
                    )
                )
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk)


def build_disk(work: Path, size_gib: float, fill_gib: float, seed: int = 1) -> Path:
    """GPT + NTFS dynamic VHDX holding random, log and duplicated files."""
    vhdx = work / f"disk-{size_gib:g}g-{fill_gib:g}g.vhdx"
    if vhdx.exists():
        return vhdx
    rng = random.Random(seed)
    size = int(size_gib * GiB)
    part_start = MiB
    part_size = size - part_start - MiB  # room for the backup GPT
    files = work / "files"
    files.mkdir(parents=True, exist_ok=True)
    fill = int(fill_gib * GiB)
    plan: list[tuple[str, str, int]] = []  # (name, kind, size)
    # ~60% incompressible, ~25% logs, ~15% duplicates of incompressible files;
    # sizes are arbitrary (not chunk multiples), like real files.
    rand_total = int(fill * 0.60)
    log_total = int(fill * 0.25)
    while sum(s for _, k, s in plan if k == "rand") < rand_total:
        plan.append((f"data{len(plan):03d}.bin", "rand", rng.randrange(20 * MiB, 120 * MiB)))
    while sum(s for _, k, s in plan if k == "log") < log_total:
        plan.append((f"app{len(plan):03d}.log", "log", rng.randrange(10 * MiB, 60 * MiB)))
    rand_files = [p for p in plan if p[1] == "rand"]
    dup_total = 0
    for name, _, s in rng.sample(rand_files, len(rand_files)):
        if dup_total >= fill * 0.15:
            break
        plan.append((f"copy-of-{name}", "dup:" + name, s))
        dup_total += s
    rng.shuffle(plan)
    print(
        f"building {vhdx.name}: {len(plan)} files, {sum(s for *_, s in plan) / GiB:.2f} GiB", file=sys.stderr
    )
    for name, kind, s in sorted(plan, key=lambda p: p[1].startswith("dup:")):
        src = files / name
        if kind == "rand":
            with open(src, "wb") as f:
                left = s
                while left:
                    n = min(left, 16 * MiB)
                    f.write(os.urandom(n))
                    left -= n
        elif kind == "log":
            make_log(src, s, rng.randrange(1 << 30))
        else:
            shutil.copyfile(files / kind[4:], src)
    # Copied in plan order (shuffled): copies are not next to their originals.
    data = builder.Partition(1, part_start, part_size, builder.BASIC_DATA_TYPE, "DATA")
    spec = builder.DiskSpec(
        size, "ntfs", "dynamic", block_size=0, label="DATA", partitions=[data],
        files={name: files / name for name, _, _ in plan},
    )  # fmt: skip
    builder.build_disk(vhdx, spec)
    shutil.rmtree(files)
    return vhdx


def churn(disk: Path, fraction: float, seed: int) -> list[tuple[int, int]]:
    """Random 64 KiB writes (fraction of the allocated data) through qemu-io,
    into blocks the VHDX already holds (files being modified in place)."""
    lay = read_layout(disk)
    present = [b for b in range(lay.data_blocks) if lay.block_entry(b)[0] == PAYLOAD_BLOCK_FULLY_PRESENT]
    allocated = len(present) * lay.block_size
    n = max(1, int(allocated * fraction) // (64 * 1024))
    rng = random.Random(seed)
    writes = []
    for _ in range(n):
        b = rng.choice(present)
        off = b * lay.block_size + rng.randrange(lay.block_size // 65536) * 65536
        if off + 65536 <= lay.virtual_size:
            writes.append((off, 65536))
    builder.qemu_io_write(disk, [(off, ln, rng.randrange(1, 255)) for off, ln in writes], batch=200)
    return writes


# --------------------------------------------------------------------------- tools
class Ours:
    name = "ours"

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.points: list[str] = []

    def cli(self, *args: str | Path) -> list[str | Path]:
        return [PY, "-m", "storage.engine", *args]

    def init(self) -> None:
        run(self.cli("init", self.repo), cwd=ROOT)

    def backup(self, disk: Path, extra: Sequence[str | Path] = ()) -> tuple[float, int]:
        dt, rss, out = timed_rss(self.cli("backup", self.repo, "--vm", "bench", *extra, disk), cwd=ROOT)
        self.points.append(out.strip())
        return dt, rss

    def restore(self, target: Path) -> tuple[float, int, Path]:
        dt, rss, _ = timed_rss(self.cli("restore", self.repo, self.points[-1], target), cwd=ROOT)
        return dt, rss, target

    def verify(self) -> float:
        return timed_rss(self.cli("verify", self.repo), cwd=ROOT)[0]


class Restic:
    name = "restic"

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def init(self) -> None:
        run(["restic", "init", "--repo", self.repo])

    def backup(self, disk: Path) -> tuple[float, int]:
        dt, rss, _ = timed_rss(["restic", "backup", "--repo", self.repo, "-q", disk.name], cwd=disk.parent)
        return dt, rss

    def restore(self, target: Path) -> tuple[float, int, Path]:
        dt, rss, _ = timed_rss(["restic", "restore", "latest", "--repo", self.repo, "-q", "--target", target])
        return dt, rss, target

    def verify(self) -> float:
        return timed_rss(["restic", "check", "--read-data", "--repo", self.repo, "-q"])[0]


class Borg:
    name = "borg"

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.n = 0

    def init(self) -> None:
        run(["borg", "init", "--encryption=none", str(self.repo)])

    def backup(self, disk: Path) -> tuple[float, int]:
        self.n += 1
        dt, rss, _ = timed_rss(
            ["borg", "create", "--compression", "zstd,3", f"{self.repo}::a{self.n}", disk.name],
            cwd=disk.parent,
        )
        return dt, rss

    def restore(self, target: Path) -> tuple[float, int, Path]:
        target.mkdir(parents=True, exist_ok=True)
        dt, rss, _ = timed_rss(["borg", "extract", f"{self.repo}::a{self.n}"], cwd=target)
        return dt, rss, target

    def verify(self) -> float:
        return timed_rss(["borg", "check", "--verify-data", str(self.repo)])[0]


def find_file(root: Path, name: str) -> Path:
    for dirpath, _, names in os.walk(root):
        if name in names:
            return Path(dirpath) / name
    raise SystemExit(f"{name} not found under {root}")


# --------------------------------------------------------------------------- main
def one_run(run_no: int, pristine: Path, work: Path, tools: list[str], res: dict) -> None:  # type: ignore[type-arg]
    disk = work / "disk.vhdx"
    shutil.copyfile(pristine, disk)
    repos = work / "repos"
    shutil.rmtree(repos, ignore_errors=True)
    repos.mkdir()
    order = tools[run_no % len(tools) :] + tools[: run_no % len(tools)]
    objs: dict[str, type[Ours] | type[Restic] | type[Borg]] = {"ours": Ours, "restic": Restic, "borg": Borg}
    inst = {t: objs[t](repos / t) for t in order}
    for t in order:
        inst[t].init()

    drop_caches()
    t0 = time.perf_counter()
    run(["cp", disk, work / "cp-copy"])
    os.sync()
    res["cp (physical reference)"]["full"].append(time.perf_counter() - t0)
    (work / "cp-copy").unlink()

    for t in order:
        drop_caches()
        dt, rss = inst[t].backup(disk)
        res[t]["full"].append(dt)
        res[t]["rss_backup"].append(rss)
    size_before = disk.stat().st_size
    vranges = churn(disk, 0.01, seed=100 + run_no)
    t0 = time.perf_counter()
    franges = virtual_to_file_ranges(disk, vranges, previous=pristine)
    map_time = time.perf_counter() - t0
    franges.append((size_before, max(0, disk.stat().st_size - size_before)))
    for t in order:
        drop_caches()
        dt, rss = inst[t].backup(disk)
        res[t]["incr"].append(dt)
    if "ours" in inst:
        ours = inst["ours"]
        assert isinstance(ours, Ours)
        rfile = work / "ranges.json"
        rfile.write_text(json.dumps({disk.name: [[o, n] for o, n in franges if n]}))
        drop_caches()
        dt, rss = ours.backup(disk, ["--parent", ours.points[0], "--changed-ranges", rfile])
        res["ours"]["incr_ranges"].append(dt + map_time)
        res["ours"]["ranges_read_mib"].append(sum(n for _, n in franges) / MiB)
    want = sha256(disk)
    for t in order:
        target = work / f"restore-{t}"
        shutil.rmtree(target, ignore_errors=True)
        drop_caches()
        dt, rss, root = inst[t].restore(target)
        got = sha256(find_file(root, disk.name))
        if got != want:
            raise SystemExit(f"{t} restored a different file!")
        res[t]["restore"].append(dt)
        res[t]["rss_restore"].append(rss)
        shutil.rmtree(target)
    for t in order:
        res[t]["size"].append(tree_size(repos / t))
    for t in order:
        drop_caches()
        res[t]["verify"].append(inst[t].verify())
    shutil.rmtree(repos)
    disk.unlink()


def fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(res: dict, args: argparse.Namespace, disk: Path, caches: bool) -> str:  # type: ignore[type-arg]
    med = {t: {k: statistics.median(v) for k, v in d.items() if v} for t, d in res.items()}
    o, r, b = med.get("ours", {}), med.get("restic", {}), med.get("borg", {})
    cp = med.get("cp (physical reference)", {}).get("full")
    lines = [
        f"# Engine vs restic {tool_version('restic')} / borg {tool_version('borg')}",
        "",
        f"Disk: {disk.name}: dynamic VHDX, {args.size_gib:g} GiB virtual, GPT + NTFS with "
        f"{args.fill_gib:g} GiB of files (60% random, 25% logs, 15% duplicated files); file "
        f"size {disk.stat().st_size / GiB:.2f} GiB. Churn: 1% of the allocated data as random "
        "64 KiB qemu-io writes. Medians of "
        f"{args.runs} run(s); all tools interleaved in one run, tool order rotated per run; "
        f"page cache {'dropped' if caches else 'NOT dropped (not permitted)'} before each step; "
        "every timed step includes a final `sync`. "
        "Machine: "
        f"{os.cpu_count()} CPUs, shared with other work while measured.",
        "",
        "Settings: ours = default datastore (1 MiB chunks, zstd level 1, unencrypted); "
        "restic = defaults (repository v2, compression auto, always encrypted, local cache on); "
        "borg = `--encryption=none --compression zstd,3`.",
        "",
        "| step | ours | restic | borg | ours/restic | ours/borg | target |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label: str, key: str, target: str, unit: str = "s", scale: float = 1.0) -> None:
        def cell(d: dict) -> str:  # type: ignore[type-arg]
            v = d.get(key)
            return f"{v / scale:.2f} {unit}" if v is not None else "-"

        lines.append(
            f"| {label} | {cell(o)} | {cell(r)} | {cell(b)} | "
            f"{fmt_ratio(o.get(key), r.get(key))} | {fmt_ratio(o.get(key), b.get(key))} | {target} |"
        )

    row("full backup", "full", "<= 0.5x borg, <= 1.5x cp")
    row("incremental, full scan (1% churn)", "incr", "<= 0.3x borg")
    if "incr_ranges" in o:
        ratio = fmt_ratio(o["incr_ranges"], o.get("incr"))
        lines.append(
            f"| incremental, changed ranges (ours) | {o['incr_ranges']:.2f} s | - | - | "
            f"{ratio} of our full-scan incremental | | <= 0.1x full-scan incremental |"
        )
    row("restore (latest)", "restore", "<= 0.5x restic")
    row("repository size", "size", "<= borg", "GiB", GiB)
    row("verify (restic check --read-data / borg check --verify-data)", "verify", "")
    row("peak RSS, backup", "rss_backup", "< 300 MiB", "MiB", MiB)
    row("peak RSS, restore", "rss_restore", "< 300 MiB", "MiB", MiB)
    lines.append("")
    if cp:
        lines.append(
            f"`cp` of the same VHDX (+sync): {cp:.2f} s -> ours full backup = "
            f"{fmt_ratio(o.get('full'), cp)} of cp."
        )
    if "ranges_read_mib" in o:
        lines.append(
            f"Changed ranges given to our engine: {o['ranges_read_mib']:.1f} MiB of file ranges "
            "(guest writes mapped through the BAT + header/log/BAT/metadata regions + growth); "
            "time includes the BAT mapping."
        )
    lines.append("")
    lines.append(
        "Raw values per run: `"
        + json.dumps({t: {k: [round(x, 3) for x in v] for k, v in d.items()} for t, d in res.items()})
        + "`"
    )
    return "\n".join(lines) + "\n"


def tool_version(tool: str) -> str:
    try:
        out = subprocess.run(
            [tool, "version" if tool == "restic" else "--version"], capture_output=True, text=True
        ).stdout
        return out.split()[1]
    except (OSError, IndexError):
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=4.0, help="virtual disk size")
    ap.add_argument(
        "--fill-gib",
        type=float,
        default=None,
        help="data put into NTFS (default: 0.45 x size, at most size - 0.5)",
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="ours,restic,borg")
    ap.add_argument("--workdir", default="/work/benchtmp/engine_vs_peers")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "latest.md"))
    args = ap.parse_args(argv)
    if args.fill_gib is None:
        args.fill_gib = round(min(args.size_gib * 0.45, args.size_gib - 0.5), 2)
    for tool in ("qemu-img", "qemu-io", "sgdisk", "mkntfs", "ntfscp"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t != "ours" and not shutil.which(t):
            raise SystemExit(f"{t} is not installed")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    pristine = build_disk(work, args.size_gib, args.fill_gib)
    caches = drop_caches()
    res: dict = defaultdict(lambda: defaultdict(list))  # type: ignore[type-arg]
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr)
        one_run(i, pristine, work, tools, res)
    text = report(res, args, pristine, caches)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
