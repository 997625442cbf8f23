"""Settings of the realtime plugin, resolved once at configure."""

from __future__ import annotations

from dataclasses import dataclass

from gateway_kernel import Setting
from gateway_kernel.config import Config, as_int, as_seconds, as_str

SETTINGS = (
    Setting("FLOWORK_REALTIME_MAX_PAYLOAD_BYTES", as_int(1024, 64 * 1024 * 1024), 1024 * 1024,
            "largest Socket.IO event payload relayed (an `error` event above; a message over "
            "twice this closes the connection)"),
    Setting("FLOWORK_REALTIME_EVENT_RATE", as_int(1, 1_000_000), 100,
            "events one socket may send per second (bursts up to twice that); the excess is "
            "dropped with an `error` event"),
    Setting("FLOWORK_REALTIME_LEASE_S", as_seconds(3, 3600), 30.0,
            "presence lease of an engine held by a socket, renewed every third of it; an "
            "instance that dies leaves its engines online at most this long"),
    Setting("FLOWORK_REALTIME_AUTH_TIMEOUT_S", as_seconds(1, 300), 15.0,
            "an engine socket that has not signed in by then is disconnected"),
    Setting("FLOWORK_REALTIME_CHANNEL", as_str, "flowork-realtime",
            "Redis channel the instances of one deployment share (with FLOWORK_REDIS_URL)"),
)


@dataclass(frozen=True)
class RealtimeConfig:
    max_payload: int
    events_per_s: int
    lease_s: float
    auth_timeout_s: float
    channel: str
    redis_url: str | None
    cors_origins: tuple[str, ...]

    @classmethod
    def from_config(cls, config: Config) -> RealtimeConfig:
        return cls(
            max_payload=config["FLOWORK_REALTIME_MAX_PAYLOAD_BYTES"],
            events_per_s=config["FLOWORK_REALTIME_EVENT_RATE"],
            lease_s=config["FLOWORK_REALTIME_LEASE_S"],
            auth_timeout_s=config["FLOWORK_REALTIME_AUTH_TIMEOUT_S"],
            channel=config["FLOWORK_REALTIME_CHANNEL"],
            redis_url=config["FLOWORK_REDIS_URL"] or None,
            cors_origins=tuple(config["FLOWORK_CORS_ORIGINS"]),
        )
