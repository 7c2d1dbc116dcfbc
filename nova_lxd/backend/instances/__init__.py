"""Instances: system containers on liblxc (service.InstanceService is daemon.instances)."""
