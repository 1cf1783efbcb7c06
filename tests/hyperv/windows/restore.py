"""The restore script as an emulated Hyper-V host runs it (filled in below)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCRIPTS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {}
