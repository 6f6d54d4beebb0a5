"""The key-admin HTTP process: register, rotate and revoke devices and dispatch stations.

    app.py              create_app (the Flask app) and main (waitress)
    api_common.py       what every blueprint shares: errors, the token check, JSON bodies
    devices_api.py      /devices: register, list, show, rotate, revoke, import
    stations_api.py     /stations and /dispatch/key
    station_accounts.py the broker logins of stations
    ops_api.py          /healthz, /metrics, /openapi.json, /audit
    openapi.py          the OpenAPI document: the one source for every path
    events.py           key events on the bus (proxies close revoked devices' connections)
    audit_witness.py    the audit log's head, witnessed on the broker
    clashes.py          v1 credentials identification cannot tell apart, reported at start
"""
