"""Storage pools: drivers behind one interface (driver.StorageDriver)."""
