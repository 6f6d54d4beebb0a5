"""The key store behind auth and keyadmin: devices, sealed credentials, counters, v2 replay
windows, dispatch station keys and the audit log. The only package that opens the database.

    models.py       the records (dataclasses) and the store's domain errors
    audit.py        the keyed hash-chained audit log: entries, hashing, verification
    integrity.py    row MACs over revocation, expiry, v2 windows and tokens (fail closed)
    store.py        KeyStore: the one interface every caller uses
    schema.py       the tables, written once for both backends, and their migration
    sql.py          SQLKeyStoreBase: the logic and statements both backends share
    sqlite.py       the SQLite backend (the state dir's keys.db, the default)
    postgres.py     the PostgreSQL backend (MEDSEC_KEYSTORE_URL)
    backends.py     open_store(config): the one place the backend is chosen
    sealing.py      secrets sealed at rest under the master key
    credentials.py  what a device's credentials are, per protocol
"""
