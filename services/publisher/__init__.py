"""Publisher: internal bus (medsec/ingest/+, medsec/events/+) -> public topic tree (Pico/#)."""
