"""The device-facing TCP proxy: framing, limits, identification via auth, publishing on the bus.

Layout (data flows top to bottom):
  server.py      lifecycle (startup, serve, shutdown), accept, shared state of open connections
  connection.py  one task per connection: deadlines, close reasons, events, pending bus acks
  protocols.py   first byte -> protocol handler (v1, v2; new protocols register here)
  v1.py          the v1 handler: a pure session (framing, timing) driven against auth
  v2.py          the v2 handler (authenticated frames, acknowledged after the broker's PUBACK)
  authclient.py  the pipelined Unix-socket client of services/auth, reconnecting
  output.py      the bus (services/common/mqttclient): readings and events out (QoS 1, bounded),
                 key events in
  state.py       what the server and its connections share: open connections, devices
  throttle.py    failed-identification throttling per source address (pure)
  probation.py   start slots for connections of a refused address, so a NAT's good devices get in (pure)
  trust.py       who may send a PROXY header (MEDSEC_PROXY_TRUSTED) (pure)
  ratelimit.py   per-device reading rate limit, a token bucket (pure)
  replay.py      v1 replay memory (byte-identical readings) and per-connection duplicate strikes (pure)
  reporter.py    one log line and event per device and reason per interval (pure)
  metrics.py     counters rendered as Prometheus text
  errors.py      Reject (reason, detail, device) and its two transport cases
"""
from services.proxy.errors import AuthUnavailable, BusUnavailable, Reject

__all__ = ["AuthUnavailable", "BusUnavailable", "Reject"]
