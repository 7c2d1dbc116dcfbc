"""Other services reach the instances service through its public surface, never its privates.

(snapshots and migration once called _lock, _stop, _start, _update... directly.)
"""
import ast
import pathlib

import nova_lxd.backend
from nova_lxd.backend.instances import service

BACKEND = pathlib.Path(nova_lxd.backend.__file__).parent


def _private_uses(path):
    """`<...instances>._name` attribute reads in one module, as (line, text)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith('_')
                and not node.attr.startswith('__')):
            continue
        owner = node.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, 'id', '')
        if name.lstrip('_').endswith('instances'):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_calls_private_methods_of_the_instances_service():
    uses = {str(path.relative_to(BACKEND)): _private_uses(path)
            for path in sorted(BACKEND.rglob('*.py'))}
    assert {path: found for path, found in uses.items() if found} == {}


def test_the_public_surface_is_there():
    for name in ('lock', 'start_container', 'stop_container', 'replace_definition',
                 'set_volatile', 'remove_everything'):
        assert callable(getattr(service.InstanceService, name)), name
