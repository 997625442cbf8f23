"""The kernel's settings (owner ``kernel``), declared before any plugin loads: among them
``FLOWORK_PLUGINS``, which says which plugins load. README "Settings" lists them all."""

from __future__ import annotations

from .config import Setting, as_choice, as_int, as_list, as_origins, as_seconds, as_str
from .http import DEFAULT_MAX_BODY
from .observe import LOG_FORMATS, LOG_LEVELS

KERNEL_SETTINGS = (
    Setting("DATABASE_URL", as_str, None, "peewee database URL (default: SQLite in ./data/)"),
    Setting("FLOWORK_PLUGINS", as_list, ["bundled"],
            "enabled plugins; 'bundled' = every bundled plugin", allow_empty=False),
    Setting("FLOWORK_AUTH_SCHEMES", as_list, [], "auth scheme order (default: plugin order)"),
    Setting("FLOWORK_CORS_ORIGINS", as_origins, ["*"], "allowed CORS origins", allow_empty=False),
    Setting("FLOWORK_MAX_BODY_BYTES", as_int(1), DEFAULT_MAX_BODY, "largest JSON request body"),
    Setting("FLOWORK_DB_POOL_SIZE", as_int(1, 1000), 20, "PostgreSQL pool size per process"),
    Setting("FLOWORK_DB_POOL_TIMEOUT_S", as_seconds(0, 600), 10.0, "wait for a pooled connection"),
    Setting("FLOWORK_REDIS_URL", as_str, None,
            "Redis for state shared between instances (default none)"),
    Setting("FLOWORK_LOG_FORMAT", as_choice(LOG_FORMATS), "text",
            "log lines as text or json (one object per line)"),
    Setting("FLOWORK_LOG_LEVEL", as_choice(LOG_LEVELS), "info",
            "lowest level logged; info includes one access line per request"),
    Setting("FLOWORK_METRICS_ADDRESS", as_str, None,
            "host:port of a separate listener serving /metrics without auth (default: none; "
            "GET /metrics with the service key always works)"),
    Setting("FLOWORK_AUTH_FAIL_LIMIT", as_int(0), 300,
            "failed authentications per client address and window before 429 (0: off)"),
    Setting("FLOWORK_AUTH_FAIL_WINDOW_S", as_seconds(1, 86400), 300.0,
            "window of FLOWORK_AUTH_FAIL_LIMIT, seconds"),
)

#: How the process serves: the kernel's worker pool and the ASGI server's connection policy
#: (gateway_kernel/serving.py; README "Serving").
SERVER_SETTINGS = (
    Setting("FLOWORK_WORKER_THREADS", as_int(1, 1000), 4,
            "threads running plugin code (database, hooks) per process; serve --threads overrides"),
    Setting("FLOWORK_SERVER_HEADER_TIMEOUT_S", as_seconds(0.1, 3600), 10.0,
            "a connection whose request head is not complete after this is closed"),
    Setting("FLOWORK_SERVER_IDLE_TIMEOUT_S", as_seconds(0.1, 3600), 30.0,
            "an idle keep-alive connection is closed, a request body silent this long is a 408"),
    Setting("FLOWORK_SERVER_STOP_TIMEOUT_S", as_seconds(0, 3600), 30.0,
            "on SIGTERM/SIGINT, how long in-flight requests may take to finish"),
    Setting("FLOWORK_SERVER_MAX_CONNECTIONS", as_int(10, 1_000_000), 2000,
            "open connections per process; above it idle and header-incomplete ones are closed"),
)
