"""The server around ingest and the worker: the ASGI app and its routes (``app``), what starts and
stops with it (``lifespan``), the connections it serves (``connections``: bounded, never idle for
long, closed so the client reads its answer) and the ops endpoints (``ops``: /healthz, /readyz,
/metrics)."""
