"""The auth socket service: the only process that reads device keys (identify, decrypt, validate).

    server.py    the Unix-socket transport and main
    service.py   AuthService: sessions, v1 readings, counters, dispatch to v2
    identify.py  v1 identification by the first block (every credential that matches it)
    v1text.py    which credential and variant a v1 reading's blocks can be under (printable text)
    v2.py        protocol v2 frames and acknowledgements
    bursts.py    bursts of failed identifications, for the audit log
"""
