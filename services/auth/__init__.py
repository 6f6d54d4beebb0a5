"""The auth socket service: the only process that reads device keys (identify, decrypt, validate).

    server.py    the Unix-socket transport and main
    service.py   AuthService: sessions, v1 readings, counters, dispatch to v2
    identify.py  v1 identification by the first block
    v2.py        protocol v2 frames and acknowledgements
    bursts.py    bursts of failed identifications, for the audit log
"""
