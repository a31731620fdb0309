//! InfluxDB line protocol writing with correct escaping.
