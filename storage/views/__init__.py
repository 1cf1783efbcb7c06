"""Storage pages: the pool (volumes) and the datastores on it."""
