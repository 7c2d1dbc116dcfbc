"""Image tooling: build, convert and upload container images (LXD unified tarballs).

A library of its own: neither the backend nor the Nova driver layer owns it, and it imports
neither. The driver uses `convert.disk_to_unified` and the constants in `formats`.
"""
