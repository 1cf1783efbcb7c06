"""Recovery job handlers register themselves here (see recovery issue)."""
