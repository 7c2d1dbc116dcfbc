"""LXD reply envelopes (backend/api/response.py) through a real aiohttp server and client."""
import asyncio

import aiohttp
from aiohttp import test_utils, web

from nova_lxd.backend.api import response


def test_a_sent_reply_lets_go_of_its_body_on_a_kept_alive_connection():
    sent = []

    async def listing(request):
        reply = response.sync([{'name': 'c%d' % i, 'status': 'Running'} for i in range(2000)])
        sent.append(reply)
        return reply

    async def scenario():
        app = web.Application()
        app.router.add_get('/1.0/instances', listing)
        async with test_utils.TestServer(app) as server:
            async with aiohttp.ClientSession() as session:
                for _ in range(2):          # the same connection: it stays open between them
                    async with session.get(server.make_url('/1.0/instances')) as reply:
                        body = await reply.json()
                        assert reply.headers.get('Connection', '').lower() != 'close'
                    assert len(body['metadata']) == 2000
                    assert body['metadata'][-1] == {'name': 'c1999', 'status': 'Running'}
                await asyncio.sleep(0.05)
                # the connection is idle and open: aiohttp still holds its last reply
                assert len(server.handler.connections) == 1
                assert [reply.body for reply in sent] == [None, None]
    asyncio.run(scenario())


def test_a_list_encoded_item_by_item_is_the_same_reply_as_sync_of_the_list():
    items = [{'name': 'c1', 'config': {'limits.cpu': '2'}}, '/1.0/instances/c2', 3, None]

    def built(values):
        listing = response.SyncList()
        for value in values:
            listing.append(value)
        return bytes(listing.reply().body)
    assert built(items) == response.sync(items).body
    assert built(items[:1]) == response.sync(items[:1]).body
    assert built([]) == response.sync([]).body
