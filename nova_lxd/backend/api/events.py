"""/1.0/events: a websocket of operation, lifecycle and logging events, filterable by type."""
import asyncio

import aiohttp
from aiohttp import web

from nova_lxd.backend import event_streams, events
from nova_lxd.backend.errors import BadRequest

routes = web.RouteTableDef()


@routes.get('/1.0/events')
async def get_events(request):
    wanted = [t for t in request.query.get('type', '').split(',') if t]
    unknown = set(wanted) - set(events.TYPES)
    if unknown:
        raise BadRequest('Unknown event type(s): %s' % ', '.join(sorted(unknown)))
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    hub = request.app['daemon'].events
    subscription = hub.subscribe(wanted)
    queue = subscription[0]
    reader = asyncio.ensure_future(ws.receive())  # notices the client going away
    handed_over = False
    try:
        while not ws.closed:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                getter.cancel()
                break
            event = getter.result()
            if event is None:      # the daemon re-executes itself
                handed_over = event_streams.hand_over(request.transport, subscription[1], hub)
                if not handed_over:      # TLS: the client reconnects
                    await ws.close(code=aiohttp.WSCloseCode.SERVICE_RESTART,
                                   message=b'restarting')
                break
            await ws.send_json(event)
    finally:
        reader.cancel()
        hub.unsubscribe(subscription)
        if not handed_over:
            await ws.close()
    return ws
