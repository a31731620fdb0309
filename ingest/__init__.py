"""MQTT ingest: the worker, the InfluxDB writer and spool, dead letters, the local servers, simulation
and replay over the broker.

The directory `ingest/` at the top of the repository is the subpackage `infrawatch.ingest` (through
the symlink `pysrc/infrawatch/ingest`); import it as `from infrawatch.ingest import ...`.
"""
