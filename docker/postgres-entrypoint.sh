#!/bin/sh
# First start: a cluster with the roles and databases `medsec` (the key store) and `history` (the
# reading history), passwords from the compose secrets, password (scram) logins from the container
# network only. Later starts: just run it.
set -eu
PWFILE=/run/secrets/postgres_password
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -r "$PWFILE" ] || { echo "medsec-postgres: secret postgres_password is missing" >&2; exit 1; }
    initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >/dev/null
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/var/run/postgresql'"
        echo "password_encryption = 'scram-sha-256'"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    # The password goes through stdin, never a command line.
    {
        printf "CREATE ROLE medsec LOGIN PASSWORD '%s';\n" "$(tr -d "\n'" < "$PWFILE")"
        echo "CREATE DATABASE medsec OWNER medsec;"
        if [ -r /run/secrets/history_db_password ]; then
            printf "CREATE ROLE history LOGIN PASSWORD '%s';\n" "$(tr -d "\n'" < /run/secrets/history_db_password)"
            echo "CREATE DATABASE history OWNER history;"
        fi
    } | psql -q -v ON_ERROR_STOP=1 -U postgres -d postgres >/dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA"
