"""Settings for the backup server. Everything deployment-specific comes from the
environment through the strict helpers in :mod:`backupsite.core.env`."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from backupsite.core.env import (
    env_bool,
    env_int,
    env_list,
    env_path,
    env_str,
    parse_database_url,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

BACKUPSITE_DATA_DIR = env_path("BACKUPSITE_DATA_DIR", BASE_DIR / "data")

_DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105
# SECRET_KEY from the environment, else the key file `make run` writes into the data
# directory (so `manage.py` commands work without exporting it).
_secret_key_file = BACKUPSITE_DATA_DIR / "secret_key"
SECRET_KEY = (
    env_str("SECRET_KEY")
    or (_secret_key_file.read_text().strip() if _secret_key_file.is_file() else "")
    or _DEV_SECRET_KEY
)
if not DEBUG and (SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random string of at least 50 characters (5 or more "
        "different ones) when DEBUG is off (make run generates one in the data directory)."
    )

# A Fernet key (32 url-safe base64 bytes) that encrypts host credentials at rest.
# When unset, a key file is created in the data directory on first use.
BACKUPSITE_CREDENTIALS_KEY = env_str("BACKUPSITE_CREDENTIALS_KEY")
if BACKUPSITE_CREDENTIALS_KEY is not None:
    try:
        if len(base64.urlsafe_b64decode(BACKUPSITE_CREDENTIALS_KEY.encode())) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise ImproperlyConfigured(
            "BACKUPSITE_CREDENTIALS_KEY must be a Fernet key: 32 bytes, url-safe base64 "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None

# Folders on this server that item-level recoveries may write into.
RECOVERY_ROOTS = env_list("BACKUPSITE_RECOVERY_ROOTS", ["/srv", "/mnt", "/media"])
for _root in RECOVERY_ROOTS:
    if not _root.startswith("/"):
        raise ImproperlyConfigured(f"BACKUPSITE_RECOVERY_ROOTS holds absolute paths only; got {_root!r}")
# Capacity alert (docs/capacity.md): a datastore's volume is "filling up" when less than
# this share of it is free, or when the growth of the last two weeks fills it within
# this many days.
CAPACITY_ALERT_FREE_PERCENT = env_int("BACKUPSITE_CAPACITY_ALERT_FREE_PERCENT", 10, minimum=0, maximum=100)
CAPACITY_ALERT_DAYS = env_int("BACKUPSITE_CAPACITY_ALERT_DAYS", 14, minimum=0, maximum=3650)
# Absolute base URL for links in emails, e.g. https://backup.example.com
SITE_URL = (env_str("SITE_URL", "") or "").rstrip("/")
if SITE_URL and not SITE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"SITE_URL must start with http:// or https://; got {SITE_URL!r}")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_filters",
    "django_q",
    "backupsite.core",
    "backupsite",
    "protection",
    "recovery",
    "storage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "backupsite.urls"
WSGI_APPLICATION = "backupsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "backupsite.context_processors.navigation",
            ],
        },
    },
]

_database_url = env_str("DATABASE_URL")
if not _database_url:
    # The first-run default keeps everything in the data directory; make sure it exists.
    BACKUPSITE_DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": parse_database_url("DATABASE_URL", _database_url)
    if _database_url
    else sqlite_database(BACKUPSITE_DATA_DIR / "backupsite.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC") or "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BACKUPSITE_DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Tests and first runs work without collectstatic: WhiteNoise finds app static files.
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

# Security: secure cookies and HSTS unless explicitly running plain HTTP on loopback.
_https = env_bool("BACKUPSITE_HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _https)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if _https else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _https
SECURE_HSTS_PRELOAD = _https
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_PROXY", False) else None
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Email: notifications when recoveries finish and when protection fails.
_email_use_tls = env_bool("EMAIL_USE_TLS", False)
_email_use_ssl = env_bool("EMAIL_USE_SSL", False)
if _email_use_tls and _email_use_ssl:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive; set one.")
MAILERS = {
    "default": {
        "BACKEND": env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"),
        "OPTIONS": {
            "host": env_str("EMAIL_HOST", "localhost") or "localhost",
            "port": env_int("EMAIL_PORT", 25, minimum=1, maximum=65535),
            "username": env_str("EMAIL_HOST_USER", "") or "",
            "password": env_str("EMAIL_HOST_PASSWORD", "") or "",
            "use_tls": _email_use_tls,
            "use_ssl": _email_use_ssl,
            "timeout": env_int("EMAIL_TIMEOUT", 30, minimum=1),
        },
    }
}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "backup@localhost") or "backup@localhost"
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Task queue: django-q2 with the ORM broker by default, Redis when REDIS_URL is set.
_redis_url = env_str("REDIS_URL")
if _redis_url is not None and not _redis_url.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis://, rediss:// or unix://; got {_redis_url!r}"
    )
Q_CLUSTER: dict[str, object] = {
    "name": "backupsite",
    "workers": env_int("BACKUPSITE_WORKERS", 2, minimum=1, maximum=64),
    "recycle": 50,
    # A backup of a large VM runs for hours: the timeout is a safety net, not a budget.
    "timeout": env_int("BACKUPSITE_JOB_TIMEOUT", 24 * 3600, minimum=60),
    "retry": env_int("BACKUPSITE_JOB_TIMEOUT", 24 * 3600, minimum=60) + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Task queue",
    "sync": env_bool("BACKUPSITE_SYNC_JOBS", False),
}
if _redis_url:
    Q_CLUSTER["redis"] = _redis_url
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 1

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO") or "INFO"},
}
