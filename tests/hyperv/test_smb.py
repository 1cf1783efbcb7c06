"""The SMB data path against a real smbd: reads, read-ahead, the byte counter, writes, errors."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from protection.connectors.hyperv.smb import (
    MiB,
    SMBAccessDenied,
    SMBClient,
    SMBHostUnreachable,
    SMBLogonFailure,
    SMBPathNotFound,
    SMBSettings,
    SMBShareNotFound,
)
from tests.hyperv.fixtures import SambaServer
from tests.samba import free_port


@pytest.fixture
def client(hyperv_samba: SambaServer) -> Iterator[SMBClient]:
    c = SMBClient(hyperv_samba.settings())
    yield c
    c.close()


@pytest.fixture
def data_file(hyperv_samba: SambaServer, request: pytest.FixtureRequest) -> tuple[Path, str]:
    folder = hyperv_samba.drive / f"smb-{request.node.name}"
    folder.mkdir(exist_ok=True)
    path = folder / "disk.bin"
    rng = random.Random(7)
    path.write_bytes(rng.randbytes(13 * MiB + 12345))
    return path, f"C:\\{folder.name}\\disk.bin"


def test_paths_map_to_admin_share_csv_owner_and_smb3_share_as_is() -> None:
    s = SMBSettings(
        "hv01", "u", "S3cret-Pw", path_rules=(("E:\\VMs", "\\\\nas\\vms"),), addresses={"NODE2": "10.0.0.2"}
    )
    assert s.to_unc("D:\\Hyper-V\\a.vhdx") == "\\\\hv01\\D$\\Hyper-V\\a.vhdx"
    assert s.to_unc("c:\\ClusterStorage\\Volume1\\vm\\a.vhdx", owner_node="node2") == (
        "\\\\node2\\C$\\ClusterStorage\\Volume1\\vm\\a.vhdx"
    )
    assert s.to_unc("\\\\fs1\\share\\vm\\a.vhdx") == "\\\\fs1\\share\\vm\\a.vhdx"
    assert s.to_unc("e:\\vms\\x\\a.vhdx") == "\\\\nas\\vms\\x\\a.vhdx"
    assert s.address_of("node2") == "10.0.0.2"
    assert "S3cret-Pw" not in repr(s)


def test_random_reads_match_the_local_file(client: SMBClient, data_file: tuple[Path, str]) -> None:
    path, windows = data_file
    local = path.read_bytes()
    rng = random.Random(1)
    with client.open_read(client.settings.to_unc(windows)) as remote:
        assert remote.size == len(local)
        assert remote.seekable() and remote.readable() and not remote.writable()
        for _ in range(60):
            off = rng.randrange(0, len(local) + 100)
            n = rng.choice([1, 511, 4096, 65536, 1 * MiB, 3 * MiB + 17])
            assert remote.seek(off) == off
            assert remote.tell() == off
            assert remote.read(n) == local[off : off + n]
            assert remote.tell() == min(off + n, max(off, len(local)))
        remote.seek(-10, io.SEEK_END)
        assert remote.read() == local[-10:]
        buf = bytearray(100)
        remote.seek(5)
        assert remote.readinto(buf) == 100 and bytes(buf) == local[5:105]


def test_sequential_read_keeps_several_requests_in_flight(
    client: SMBClient, data_file: tuple[Path, str]
) -> None:
    path, windows = data_file
    local = path.read_bytes()
    with client.open_read(client.settings.to_unc(windows)) as remote:
        out = bytearray()
        peak = 0
        while block := remote.read(1 * MiB):
            out += block
            peak = max(peak, len(remote._pending))
        assert bytes(out) == local
        assert peak >= 2  # the read-ahead window was used
        # Sequential reading wastes nothing: every byte received was handed out.
        assert remote.bytes_read == len(local)


def test_byte_counter_counts_only_what_was_read(client: SMBClient, data_file: tuple[Path, str]) -> None:
    _path, windows = data_file
    before = client.bytes_read.value
    with client.open_read(client.settings.to_unc(windows)) as remote:
        for off in (0, 5 * MiB, 9 * MiB):
            remote.seek(off)
            remote.read(64 * 1024)
        assert remote.bytes_read == 3 * 64 * 1024
    assert client.bytes_read.value - before == 3 * 64 * 1024


def test_the_engine_backs_up_through_the_reader(
    client: SMBClient, data_file: tuple[Path, str], tmp_path: Path
) -> None:
    from storage.engine import Datastore, SourceFile

    path, windows = data_file
    ds = Datastore.create(tmp_path / "ds")
    unc = client.settings.to_unc(windows)
    point = ds.backup("vm", [SourceFile("disk.bin", client.opener(unc), client.stat_size(unc))])
    ds.restore(point.id, tmp_path / "out")
    assert (tmp_path / "out" / "disk.bin").read_bytes() == path.read_bytes()


def test_write_file_creates_folders_and_replaces_atomically(
    client: SMBClient, hyperv_samba: SambaServer, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB) + bytes(5 * MiB) + b"tail"
    unc = "\\\\127.0.0.1\\C$\\restore-w\\Virtual Hard Disks\\d.vhdx"
    assert client.write_file(unc, io.BytesIO(data), len(data)) == len(data)
    target = hyperv_samba.drive / "restore-w" / "Virtual Hard Disks" / "d.vhdx"
    assert target.read_bytes() == data
    client.write_file(unc, io.BytesIO(b"new"), 3)
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["d.vhdx"]  # no temporary left
    with pytest.raises(Exception, match="ended after"):
        client.write_file(unc, io.BytesIO(b"short"), 10)
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["d.vhdx"]


def test_bad_password_is_a_logon_failure_without_the_password(hyperv_samba: SambaServer) -> None:
    c = SMBClient(hyperv_samba.settings(password="wrong-Secret-77", server="localhost"))
    with pytest.raises(SMBLogonFailure) as info:
        c.open_read("\\\\localhost\\C$\\x")
    assert "wrong-Secret-77" not in str(info.value)
    assert "refused" in str(info.value)


def test_missing_share_path_and_denied_share(client: SMBClient, data_file: tuple[Path, str]) -> None:
    with pytest.raises(SMBShareNotFound, match="share does not exist"):
        client.open_read("\\\\127.0.0.1\\D$\\x.vhdx")
    with pytest.raises(SMBPathNotFound, match="file does not exist"):
        client.open_read("\\\\127.0.0.1\\C$\\no-such-file.vhdx")
    with pytest.raises(SMBPathNotFound):
        client.open_read("\\\\127.0.0.1\\C$\\no-folder\\x.vhdx")
    with pytest.raises(SMBAccessDenied, match="access is denied"):
        client.open_read("\\\\127.0.0.1\\locked\\x.vhdx")
    assert not client.exists("\\\\127.0.0.1\\C$\\no-such-file.vhdx")


def test_unreachable_host(hyperv_samba: SambaServer) -> None:
    c = SMBClient(hyperv_samba.settings(port=free_port(), connection_timeout=3, server="127.0.0.2"))
    with pytest.raises(SMBHostUnreachable, match="cannot be reached"):
        c.open_read("\\\\127.0.0.2\\C$\\x")


def test_read_ahead_stays_inside_the_callers_plan(client: SMBClient, data_file: tuple[Path, str]) -> None:
    path, windows = data_file
    local = path.read_bytes()
    unc = client.settings.to_unc(windows)

    def read_first(n_mib: int, plan: list[tuple[int, int]] | None) -> int:
        with client.open_read(unc, plan) as remote:
            for i in range(n_mib):
                assert remote.read(1 * MiB) == local[i * MiB : (i + 1) * MiB]
        return remote.bytes_read  # closing collected the replies still in flight

    # Without a plan, a long sequential run reads ahead past where the caller stops...
    assert read_first(8, None) > 8 * MiB
    # ...with one, never past the end of the planned range.
    assert read_first(8, [(0, 8 * MiB), (11 * MiB, MiB)]) == 8 * MiB
