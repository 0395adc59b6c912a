"""The simulator's HTTP control API, so tests can drive it as a separate process. It has
no authentication: it is a test tool and listens on 127.0.0.1 by default."""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.testing.twilio_sim.faults import Fault
from gateway.testing.twilio_sim.wire import new_sid, strip_channel

if TYPE_CHECKING:
    from gateway.testing.twilio_sim.simulator import TwilioSimulator


def control_routes(app: web.Application, sim: TwilioSimulator) -> None:
    """``POST /_sim/texts`` {from, to, body, channel?, media?: [{url, content_type}],
    attachments?: [{data_base64, content_type}]} sends a text from a phone (attachments
    are hosted here as the message's Media); ``POST /_sim/media`` {data_base64,
    content_type} hosts a file only and answers its URL;
    ``GET /_sim/inbox?phone=%2B1…&count=N&timeout=S[&since=K][&data=0]`` reads (and
    waits for) a phone's inbox (from its K+1st text), with the media each text brought
    (their bytes too, unless data=0);
    ``POST /_sim/faults`` {kind, …} injects a fault and ``DELETE /_sim/faults`` clears them;
    ``GET /_sim/messages`` and ``GET /_sim/attempts`` list what was created and every
    create request."""

    async def texts(request: web.Request) -> web.Response:
        data = await request.json()
        try:
            media = [(m["url"], m.get("content_type", "image/jpeg")) for m in data.get("media", [])]
            attachments = [(base64.b64decode(a["data_base64"], validate=True),
                            str(a.get("content_type", "image/jpeg")))
                           for a in data.get("attachments", [])]
            result = await sim.text_from_phone(
                str(data["from"]), str(data["to"]), str(data.get("body", "")),
                channel=str(data.get("channel", "sms")), media=media,
                webhook_url=data.get("webhook_url"), signed=bool(data.get("signed", True)),
                attachments=attachments)
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        except aiohttp.ClientError as exc:
            return web.json_response({"error": f"webhook unreachable: {exc}"}, status=502)
        return web.json_response({"sid": result.sid, "status": result.status,
                                  "body": result.body})

    async def host_media(request: web.Request) -> web.Response:
        """Hosts a file as a phone's message's Media, without sending anything: its
        Twilio-shaped URL (behind the account's credentials), for a caller that posts
        the webhook itself (a benchmark timing the gateway alone)."""
        data = await request.json()
        try:
            content = base64.b64decode(data["data_base64"], validate=True)
            kind = str(data.get("content_type", "image/jpeg"))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        media = sim.media.host(new_sid("MM"), content, kind)
        return web.json_response({"url": sim.url + media.uri, "sid": media.sid,
                                  "content_type": kind}, status=201)

    async def inbox(request: web.Request) -> web.Response:
        phone = request.query.get("phone", "")
        if not phone:
            return web.json_response({"error": "phone is required"}, status=400)
        try:
            count = int(request.query.get("count", "0"))
            timeout = min(float(request.query.get("timeout", "0")), 60.0)
            since = max(int(request.query.get("since", "0")), 0)
            with_data = request.query.get("data", "1") != "0"
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        received = (await sim.wait_for_inbox(phone, count, timeout) if count
                    else sim.inbox(phone))
        # ``since``: only the texts after the first ``since`` (their files are big)
        return web.json_response({"phone": strip_channel(phone), "complete": len(received) >= count,
                                  "total": len(received),
                                  "messages": [r.to_json(with_data=with_data)
                                               for r in received[since:]]})

    async def add_fault(request: web.Request) -> web.Response:
        try:
            fault = Fault.from_json(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        sim.inject(fault)
        return web.json_response(asdict(fault), status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        sim.clear_faults()
        return web.Response(status=204)

    async def messages(request: web.Request) -> web.Response:
        return web.json_response([m.to_json() for m in sim.newest_first()])

    async def attempts(request: web.Request) -> web.Response:
        return web.json_response([{"at": a.at, "from": a.from_, "to": a.to,
                                   "outcome": a.outcome} for a in sim.attempts])

    app.router.add_post("/_sim/texts", texts)
    app.router.add_post("/_sim/media", host_media)
    app.router.add_get("/_sim/inbox", inbox)
    app.router.add_post("/_sim/faults", add_fault)
    app.router.add_delete("/_sim/faults", clear_faults)
    app.router.add_get("/_sim/messages", messages)
    app.router.add_get("/_sim/attempts", attempts)
