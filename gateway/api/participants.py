"""``/v1/conversations/{ref}/participants``: chat participants (a wallet, by
``identity``) and non-chat ones (a phone: ``address``, ``proxy_address``, ``channel``)."""

from __future__ import annotations

from aiohttp import web

from gateway.api import params
from gateway.api.errors import InvalidBody
from gateway.api.keys import API_SERVICE
from gateway.api.refs import REF
from gateway.api.views import participant_json
from gateway.domain.models import PHONE_CHANNELS, Channel


async def list_participants(request: web.Request) -> web.Response:
    found = await request.app[API_SERVICE].list_participants(
        request.match_info["ref"], include_left=params.query_bool(request, "include_left"))
    return web.json_response({"data": [participant_json(p) for p in found]})


async def add_participant(request: web.Request) -> web.Response:
    body = await params.json_object(
        request, allowed={"identity", "address", "proxy_address", "channel", "attributes"})
    service = request.app[API_SERVICE]
    ref = request.match_info["ref"]
    attributes = params.attributes(body)
    if body.get("identity") is not None:
        if any(body.get(f) is not None for f in ("address", "proxy_address")):
            raise InvalidBody("give identity (a wallet) or address and proxy_address, not both")
        if body.get("channel") not in (None, Channel.XMTP.value):
            raise InvalidBody("a chat participant's channel is xmtp")
        participant = await service.add_chat_participant(
            ref, identity=params.required_text(body, "identity"), attributes=attributes)
    else:
        address = params.required_text(body, "address")
        proxy = params.required_text(body, "proxy_address")
        channel = params.enum_value(Channel, body.get("channel", "sms"), "channel",
                                    allowed=set(PHONE_CHANNELS), error=InvalidBody)
        participant = await service.add_phone_participant(
            ref, address=address, proxy_address=proxy, channel=channel, attributes=attributes)
    return web.json_response(participant_json(participant), status=201)


async def get_participant(request: web.Request) -> web.Response:
    participant = await request.app[API_SERVICE].get_participant(
        request.match_info["ref"], request.match_info["participant_id"])
    return web.json_response(participant_json(participant))


async def remove_participant(request: web.Request) -> web.Response:
    await request.app[API_SERVICE].remove_participant(
        request.match_info["ref"], request.match_info["participant_id"])
    return web.Response(status=204)


def add_routes(app: web.Application, prefix: str) -> None:
    base = f"{prefix}/conversations/{REF}/participants"
    app.router.add_get(base, list_participants)
    app.router.add_post(base, add_participant)
    app.router.add_get(f"{base}/{{participant_id}}", get_participant)
    app.router.add_delete(f"{base}/{{participant_id}}", remove_participant)
