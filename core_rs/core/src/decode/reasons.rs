//! The stable reason codes of per-message decode errors (the table lives in docs/reason-codes.md).

/// Why a message (or one element of a gateway batch) was rejected. The `code()` strings are a
/// contract: dashboards, dead-letter queries and external tests match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    TooLarge,
    InvalidJson,
    NotObject,
    BadTopic,
    UnknownKind,
    KindMismatch,
    MissingSensorId,
    BadSensorId,
    SensorMismatch,
    BadSite,
    SiteMismatch,
    BadZone,
    BadTimestamp,
    BadValue,
    BadFieldName,
    DuplicateField,
    TooManyFields,
    NoMeasurements,
    TooManyReadings,
    EmptyBatch,
}

impl Reason {
    /// Every reason, in the order of the documentation table.
    pub const ALL: [Reason; 20] = [
        Reason::TooLarge,
        Reason::InvalidJson,
        Reason::NotObject,
        Reason::BadTopic,
        Reason::UnknownKind,
        Reason::KindMismatch,
        Reason::MissingSensorId,
        Reason::BadSensorId,
        Reason::SensorMismatch,
        Reason::BadSite,
        Reason::SiteMismatch,
        Reason::BadZone,
        Reason::BadTimestamp,
        Reason::BadValue,
        Reason::BadFieldName,
        Reason::DuplicateField,
        Reason::TooManyFields,
        Reason::NoMeasurements,
        Reason::TooManyReadings,
        Reason::EmptyBatch,
    ];

    /// The stable snake_case code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::InvalidJson => "invalid_json",
            Reason::NotObject => "not_object",
            Reason::BadTopic => "bad_topic",
            Reason::UnknownKind => "unknown_kind",
            Reason::KindMismatch => "kind_mismatch",
            Reason::MissingSensorId => "missing_sensor_id",
            Reason::BadSensorId => "bad_sensor_id",
            Reason::SensorMismatch => "sensor_mismatch",
            Reason::BadSite => "bad_site",
            Reason::SiteMismatch => "site_mismatch",
            Reason::BadZone => "bad_zone",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadValue => "bad_value",
            Reason::BadFieldName => "bad_field_name",
            Reason::DuplicateField => "duplicate_field",
            Reason::TooManyFields => "too_many_fields",
            Reason::NoMeasurements => "no_measurements",
            Reason::TooManyReadings => "too_many_readings",
            Reason::EmptyBatch => "empty_batch",
        }
    }
}

/// All reason codes, as exported to Python (`core.REASON_CODES`).
pub const REASON_CODES: [&str; Reason::ALL.len()] = {
    let mut out = [""; Reason::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = Reason::ALL[i].code();
        i += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in REASON_CODES {
            assert!(seen.insert(code), "{code}");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }
}
