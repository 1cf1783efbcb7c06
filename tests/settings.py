"""Settings for the test suite: production settings with test-only environment.

The environment is set here, before backupsite.settings reads it, because
pytest-django loads settings before any conftest runs.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-abcdefghijklmnopqrstuvwxyz-0123456789-ABCDEFG")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hvbackup")
os.environ.setdefault("BACKUPSITE_HTTPS", "0")
os.environ.setdefault("BACKUPSITE_DATA_DIR", tempfile.mkdtemp(prefix="hvbackup-test-data-"))

import backupsite.settings as _production

globals().update({name: value for name, value in vars(_production).items() if name.isupper()})

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Jobs run inline in tests, except in a real worker cluster started by an integration test
# (tests/browser/workers.py), which sets this switch for its qcluster process.
Q_CLUSTER = {**_production.Q_CLUSTER, "sync": os.environ.get("BACKUPSITE_TEST_REAL_WORKERS") != "1"}
# Production uses hashed names from collectstatic; tests serve straight from the apps.
STORAGES = {
    **_production.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
_production.STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
# Live-server threads must not keep connections open past a request, or the test
# database cannot be dropped at the end of the run.
DATABASES = {"default": {**_production.DATABASES["default"], "CONN_MAX_AGE": 0}}
