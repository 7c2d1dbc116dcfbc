"""metadata.yaml validation and the publish helpers that need no daemon."""
import pytest
import yaml

from nova_lxd.backend.errors import BadRequest
from nova_lxd.backend.images import metadata, publish
from tests.functional.backend.hostile_tarballs import metadata_yaml


def test_valid_metadata_is_normalised():
    meta = metadata.parse(metadata_yaml(architecture='amd64', creation_date=1700000000),
                          {'hostname.tpl'})
    assert meta['architecture'] == 'x86_64'
    assert meta['creation_date'] == 1700000000
    assert meta['properties']['os'] == 'busybox'
    assert meta['templates']['/etc/hostname'] == {
        'when': ['create', 'copy'], 'template': 'hostname.tpl', 'create_only': False,
        'properties': {}}


@pytest.mark.parametrize('doc,words', [
    ({'architecture': 'x86_64', 'expiry_date': -1}, 'expiry_date'),
    ({'architecture': 'x86_64', 'creation_date': True}, 'creation_date'),
    ({'architecture': 'x86_64', 'properties': {'a': ['b']}}, 'properties.a'),
    ({'architecture': 'x86_64', 'templates': []}, 'templates must be a map'),
    ({'architecture': 'x86_64', 'templates': {'/x': {'when': ['boot'], 'template': 't'}}},
     'when'),
    ({'architecture': 'x86_64', 'templates': {'x': {'template': 't'}}}, 'absolute'),
    ({'architecture': 'x86_64', 'templates': {'/x': {'template': '../t'}}}, 'templates/'),
    ({'architecture': 'x86_64', 'templates': {'/x': {'template': 't', 'bogus': 1}}}, 'bogus'),
    ({'architecture': 'x86_64', 'surprise': 1}, 'surprise'),
    ({'architecture': None}, 'unknown architecture'),
])
def test_bad_metadata_is_refused_naming_the_field(doc, words):
    with pytest.raises(BadRequest) as exc:
        metadata.parse(yaml.safe_dump(doc).encode(), {'t'})
    assert words in str(exc.value)


def test_yaml_alias_bomb_is_refused_by_types():
    bomb = b'a: &a ["x","x"]\nb: &b [*a,*a]\narchitecture: x86_64\nproperties: {p: *b}\n'
    with pytest.raises(BadRequest):
        metadata.parse(bomb)


def test_dump_round_trips():
    meta = metadata.parse(metadata_yaml(), {'hostname.tpl'})
    assert metadata.parse(metadata.dump(meta).encode(), {'hostname.tpl'}) == meta


def test_idmap_shift_back_to_the_container_view():
    idmap = [('u', 0, 1000000, 65536), ('g', 0, 1000000, 65536)]
    to_ns = publish._host_to_ns(idmap, 'u')
    assert to_ns(1000000) == 0
    assert to_ns(1001000) == 1000
    assert to_ns(5) is None


@pytest.mark.parametrize('body,words', [
    ({'source': {'type': 'instance'}}, 'source.name'),
    ({'source': {'type': 'snapshot', 'name': 'c1'}}, '<instance>/<snapshot>'),
    ({'source': {'type': 'instance', 'name': 'c1'}, 'compression_algorithm': 'lz4'}, 'lz4'),
    ({'source': {'type': 'instance', 'name': 'c1'}, 'properties': {'a': 1}}, 'properties'),
    ({'source': {'type': 'instance', 'name': 'c1'}, 'aliases': ['x']}, 'aliases'),
    ({'source': {'type': 'magic', 'name': 'c1'}}, 'magic'),
])
def test_publish_request_is_checked(body, words):
    with pytest.raises(BadRequest) as exc:
        publish.parse_request(body)
    assert words in str(exc.value)


def test_publish_request_parsed():
    instance, snapshot, options = publish.parse_request({
        'source': {'type': 'snapshot', 'name': 'c1/snap0'}, 'compression_algorithm': 'xz',
        'aliases': [{'name': 'a'}], 'properties': {'os': 'x'}, 'public': True})
    assert (instance, snapshot) == ('c1', 'snap0')
    assert options['compression'] == 'xz' and options['public'] is True
