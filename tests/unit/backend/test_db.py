"""The daemon's document store (sqlite)."""
import threading

from nova_lxd.backend.db import Database


def test_each_reads_at_the_call_and_decodes_one_document_at_a_time(tmp_path):
    db = Database(str(tmp_path / 'db'))
    for name in ('c', 'a', 'b', 'ab'):
        db.put('instance', name, {'name': name, 'config': {'k': name}})
    db.put('profile', 'a', {'name': 'a'})
    docs = db.each('instance')
    db.put('instance', 'd', {'name': 'd'})      # after the read: not in this listing
    first = next(docs)
    assert first == {'name': 'a', 'config': {'k': 'a'}}
    # the rows were read at the call: the store is free while the caller works on each one
    writer = threading.Thread(target=db.put, args=('instance', 'e', {'name': 'e'}))
    writer.start()
    writer.join(5)
    assert not writer.is_alive()
    assert [doc['name'] for doc in docs] == ['ab', 'b', 'c']
    assert [doc['name'] for doc in db.each('instance', prefix='a')] == ['a', 'ab']
    assert db.list('instance') == list(db.each('instance'))
