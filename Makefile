# Two entry points for people: `make run` (the product) and `make test` (the suite).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# pyenv honours .python-version; elsewhere use whichever python3.12+ is on PATH.
PYTHON ?= $(shell command -v python3.12 || command -v python3.13 || command -v python3)
DATA_DIR ?= $(CURDIR)/data
export BACKUPSITE_DATA_DIR ?= $(DATA_DIR)

# Debian packages: lab disks are real VHDX files built with these tools.
RUN_DEB := qemu-utils ntfs-3g gdisk e2fsprogs
# Tests also drive a real browser and real peers.
TEST_DEB := $(RUN_DEB) chromium dosfstools mtools exfatprogs fuse3 samba
RUN_TOOLS := qemu-img qemu-io mkntfs ntfscp sgdisk mkfs.ext4
TEST_TOOLS := $(RUN_TOOLS) chromium smbd mkfs.vfat mkfs.exfat

.PHONY: help venv run test lint system-packages-run system-packages-test demo bench reliability

help:
	@echo "make run    install, set up and serve the dashboard with workers on http://127.0.0.1:8000"
	@echo "make test   install and run the whole test suite (needs PostgreSQL on 127.0.0.1:5432)"
	@echo "make bench  compare the backup engine with restic and borg"
	@echo "make reliability  the fault-injection tests' long variants (rewrites docs/reliability.md)"

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "Python 3.12 or newer is needed; found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Installs only what is missing; uses sudo when not root.
define install_debian
	@missing=""; for tool in $(2); do command -v $$tool >/dev/null || missing=yes; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $(1)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(1) >/dev/null; \
	fi
endef

system-packages-run:
	$(call install_debian,$(RUN_DEB),$(RUN_TOOLS))

system-packages-test:
	$(call install_debian,$(TEST_DEB),$(TEST_TOOLS))

run: system-packages-run venv
	@mkdir -p "$(DATA_DIR)"
	@[ -s "$(DATA_DIR)/secret_key" ] || (umask 077; $(PY) -c 'import secrets; print(secrets.token_urlsafe(64))' > "$(DATA_DIR)/secret_key")
	@export SECRET_KEY="$$(cat "$(DATA_DIR)/secret_key")" BACKUPSITE_HTTPS=$${BACKUPSITE_HTTPS:-0}; \
	  $(PY) manage.py migrate --no-input -v0 && \
	  $(PY) manage.py collectstatic --no-input -v0 && \
	  $(PY) manage.py bootstrap && \
	  $(PY) manage.py lab demo && \
	  $(PY) manage.py serve --bind 127.0.0.1:8000

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	DEBUG=1 $(VENV)/bin/mypy .

test: system-packages-test venv lint
	$(PY) -m pytest --create-db $(PYTEST_ARGS)

# The fault-injection tests' long variants (many more injections); rewrites docs/reliability.md.
reliability: system-packages-test venv
	RELIABILITY_LONG=1 UPDATE_RELIABILITY=1 $(PY) -m pytest --create-db -p no:cacheprovider tests/reliability tests/vdisk/test_malformed.py tests/recovery/test_malformed_images.py $(PYTEST_ARGS)

bench: system-packages-test venv
	$(call install_debian,restic borgbackup,restic borg)
	$(PY) -m bench.engine_vs_peers $(BENCH_ARGS)
