"""Storage pools: drivers behind one interface (driver.StorageDriver)."""
from nova_lxd.backend.storage.service import StorageService  # noqa: F401
