"""``GET /media/<key>?e=…&k=…&s=…``: the local blob store's media, to whoever holds a
signed URL that has not expired (Twilio fetching a MediaUrl, an XMTP client fetching a
remote attachment's ciphertext)."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import BlobNotFound
from gateway.media.local_store import MEDIA_PATH, LocalBlobStore

LOCAL_MEDIA: web.AppKey[LocalBlobStore] = web.AppKey("local_media_store")

_HEADERS = {
    # Strangers' files are served from the gateway's own origin: never let a browser run
    # them (HTML, SVG) or guess a type other than the one stored.
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Referrer-Policy": "no-referrer",
}


def add_media_routes(app: web.Application) -> None:
    """Adds the route; the store is looked up under ``LOCAL_MEDIA`` per request (set by
    a cleanup context), so a gateway on S3 storage answers 404 here."""
    app.router.add_get(MEDIA_PATH + "/{key:.+}", serve_media)


async def serve_media(request: web.Request) -> web.Response:
    store = request.app.get(LOCAL_MEDIA)
    if store is None:
        raise web.HTTPNotFound()
    key = request.match_info["key"]
    query = request.query
    left = store.verify(key, query.get("e", ""), query.get("k", ""), query.get("s", ""))
    if left is None:
        raise web.HTTPForbidden(text="this media link is not valid or has expired")
    try:
        blob = await store.get(key)
    except BlobNotFound:
        raise web.HTTPNotFound() from None
    return web.Response(body=blob.data, headers={
        **_HEADERS, "Content-Type": blob.content_type,
        "Cache-Control": f"private, max-age={left}"})
