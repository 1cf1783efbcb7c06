from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django_q.models import Schedule

from storage.engine import Datastore as EngineDatastore
from storage.models import Datastore, Volume

pytestmark = pytest.mark.django_db


def test_bootstrap_creates_datastore_admin_and_schedule_once(settings, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings.BACKUPSITE_DATA_DIR = tmp_path
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    out = StringIO()
    call_command("bootstrap", stdout=out)
    text = out.getvalue()
    assert "one-time password: " in text
    password = text.split("one-time password: ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    datastore = Datastore.objects.get()
    assert datastore.path == str(tmp_path / "datastore")
    assert (tmp_path / "datastore" / "format.json").exists()
    assert Schedule.objects.filter(name="reap-stale-jobs").count() == 1
    assert Schedule.objects.get(name="protection-scheduler").func == "protection.scheduler.tick"
    capacity = Schedule.objects.get(name="capacity")
    assert (capacity.func, capacity.minutes) == ("protection.services.capacity_watch.refresh_capacity", 60)

    again = StringIO()
    call_command("bootstrap", stdout=again)
    assert again.getvalue() == ""  # nothing missing, nothing created
    assert get_user_model().objects.count() == 1 and Datastore.objects.count() == 1
    assert Schedule.objects.filter(name="reap-stale-jobs").count() == 1


def test_bootstrap_uses_admin_password_from_environment(settings, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings.BACKUPSITE_DATA_DIR = tmp_path
    monkeypatch.setenv("ADMIN_PASSWORD", "from-the-environment-42")
    out = StringIO()
    call_command("bootstrap", stdout=out)
    assert "from-the-environment-42" not in out.getvalue()
    assert get_user_model().objects.get(username="admin").check_password("from-the-environment-42")


def test_bootstrap_does_not_stop_at_an_encrypted_store_it_has_no_key_for(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings.BACKUPSITE_DATA_DIR = tmp_path
    EngineDatastore.create(tmp_path / "datastore", key="made-elsewhere")
    out = StringIO()
    call_command("bootstrap", stdout=out)
    assert "was not registered" in out.getvalue() and "is encrypted: give its recovery key" in out.getvalue()
    assert not Datastore.objects.exists()
    assert Volume.objects.get().path == str(tmp_path)  # the pool is there; register it from there
    assert get_user_model().objects.filter(is_superuser=True).exists()
