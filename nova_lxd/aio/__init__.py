"""Glue of the all-in-one cloud (aio/cloud.sh) that has to live in an importable package."""
