"""The storage pool in a real browser: add a volume (a refused one first), create an
encrypted datastore on it, save its recovery key, and find it in the pool."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from backupsite.core.permissions import Role
from storage.models import Datastore, Volume
from tests.browser.helpers import sign_in
from tests.storage.conftest import Mounter, needs_root, tmpfs  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@needs_root
def test_add_a_volume_and_create_an_encrypted_datastore_on_it(
    page: Any,
    live_server: Any,
    django_user_model: Any,
    tmpfs: Mounter,  # noqa: F811
) -> None:
    usb = tmpfs("usb", "size=64m")
    read_only = tmpfs("cdrom", "ro,size=8m")
    sign_in(page, live_server, django_user_model, "pool-admin", Role.ADMINISTRATOR)

    page.get_by_role("link", name="Storage", exact=True).click()
    expect(page.locator("main h1")).to_have_text("Storage")
    expect(page.locator("main")).to_contain_text("No volume registered yet.")
    page.get_by_role("button", name="Add volume").click()  # a link styled as a button

    # A read-only mount is refused on the form, nothing is added.
    page.get_by_label("Path").fill(str(read_only))
    page.get_by_role("button", name="Add volume").click()
    expect(page.locator("main")).to_contain_text(f"{read_only} is on a read-only mount")
    assert not Volume.objects.exists()

    page.get_by_label("Path").fill(str(usb))
    page.get_by_label("Label").fill("USB disk")
    page.get_by_role("button", name="Add volume").click()
    expect(page.locator("main h1")).to_have_text("USB disk")
    expect(page.locator(".flash-success")).to_contain_text("Volume USB disk added.")
    expect(page.locator("main")).to_contain_text("tmpfs on tmpfs")
    expect(page.get_by_test_id("volume-space")).to_contain_text("64.0 MB")

    page.get_by_role("button", name="Create datastore").click()
    expect(page.locator("main h1")).to_have_text("Create datastore on USB disk")
    page.get_by_label("Name").fill("Offsite")
    page.get_by_label("Folder").fill("../escape")
    page.get_by_role("button", name="Create datastore").click()
    expect(page.locator("main")).to_contain_text("The folder must be a single name")
    assert not Datastore.objects.exists()

    page.get_by_label("Folder").fill("offsite")
    page.get_by_label("Chunk size").select_option(label="512 KiB")
    page.get_by_label("Compression (zstd level)").select_option(label="3 (balanced)")
    page.get_by_label("Colocation: several protection groups may share this datastore").uncheck()
    page.get_by_label("Encrypt (AES-256-GCM)").check()
    page.get_by_role("button", name="Create datastore").click()

    page.wait_for_url(re.compile(r"/storage/\d+/recovery-key/$"))
    key = page.get_by_test_id("recovery-key").inner_text().strip()
    assert re.fullmatch(r"([A-Z2-7]{4}-){12}[A-Z2-7]{4}", key), key
    page.get_by_role("button", name="Done").click()
    expect(page.locator(".errorlist")).to_contain_text("Tick the box once you have saved the recovery key.")
    page.get_by_label("I have saved the recovery key").check()
    page.get_by_role("button", name="Done").click()

    page.wait_for_url(re.compile(r"/storage/\d+/$"))
    expect(page.locator("main h1")).to_have_text("Offsite")
    expect(page.locator("main")).to_contain_text("512.0 KB chunks · zstd level 3 · encrypted (AES-256-GCM)")
    expect(page.get_by_test_id("colocation")).to_contain_text("Dedicated:")
    expect(page.locator("main")).not_to_contain_text(key)

    page.get_by_role("link", name="Storage", exact=True).click()
    volume = page.get_by_test_id("volume").filter(has_text="USB disk")
    expect(volume).to_contain_text("Offsite")
    expect(volume).to_contain_text("dedicated")
    datastore = Datastore.objects.get()
    assert datastore.path == str(Path(usb, "offsite")) and datastore.encrypted
    assert not datastore.recovery_key_pending
    assert datastore.open_engine().settings.compression_level == 3
