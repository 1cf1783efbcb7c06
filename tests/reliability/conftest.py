"""Fault-injection tests: shared fixtures and the fault table writer."""

from __future__ import annotations

import os

import pytest

from tests.protection.conftest import lab_template, protected_lab  # noqa: F401 - fixtures
from tests.reliability import report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("UPDATE_RELIABILITY") == "1":
        report.write()
