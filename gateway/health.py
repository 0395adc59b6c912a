"""/healthz (the process answers), /readyz (database reachable, workers running), /metrics."""

from __future__ import annotations

from aiohttp import web

from gateway.appkeys import METRICS, STORE, TASKS
from gateway.errors import StoreError
from gateway.metrics import CONTENT_TYPE


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems: dict[str, str] = {}
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        problems["database"] = str(exc)
    for name, task in request.app.get(TASKS, {}).items():
        if task.done():
            problems[name] = "stopped"
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
