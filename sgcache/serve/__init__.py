"""The HTTP face: the api3 endpoint, passthrough, authentication, metrics, status pages.

`app` (the Starlette app: answer locally or forward), `auth` (who may read: verified
against the site, remembered by salted hash), `metrics` (Prometheus and the request
log line), `status` (`/status`, `/readyz`), `server` (uvicorn, workers, the sync loop).

May import: `sync`, `runtime`, `read`, `store`, `upstream`, the wire. Never `cli`.
"""
