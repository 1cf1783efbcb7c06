from __future__ import annotations

from tests.hyperv.fixtures import hyperv_samba  # noqa: F401
