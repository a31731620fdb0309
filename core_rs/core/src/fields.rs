//! The canonical measurement fields (DESIGN.md §1), their aliases, and the sensor kinds.

/// A canonical field: its name, unit and the aliases accepted in payloads (matched case-insensitively).
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub unit: &'static str,
    pub aliases: &'static [&'static str],
}

/// Every canonical field, in a fixed order (the column order of decoded batches).
pub const CANONICAL_FIELDS: &[FieldSpec] = &[
    FieldSpec {
        name: "pressure_bar",
        unit: "bar",
        aliases: &["pressure"],
    },
    FieldSpec {
        name: "flow_rate_lps",
        unit: "L/s",
        aliases: &["flow", "flow_rate"],
    },
    FieldSpec {
        name: "temperature_c",
        unit: "°C",
        aliases: &["temp", "temperature"],
    },
    FieldSpec {
        name: "total_flow_m3",
        unit: "m³",
        aliases: &["total_flow", "volume"],
    },
    FieldSpec {
        name: "ph",
        unit: "pH",
        aliases: &[],
    },
    FieldSpec {
        name: "turbidity_ntu",
        unit: "NTU",
        aliases: &["turbidity"],
    },
    FieldSpec {
        name: "dissolved_oxygen_mgl",
        unit: "mg/L",
        aliases: &["dissolved_oxygen", "do"],
    },
    FieldSpec {
        name: "conductivity_uscm",
        unit: "µS/cm",
        aliases: &["conductivity"],
    },
    FieldSpec {
        name: "chlorine_mgl",
        unit: "mg/L",
        aliases: &["chlorine"],
    },
    FieldSpec {
        name: "redox_mv",
        unit: "mV",
        aliases: &["redox"],
    },
    FieldSpec {
        name: "nitrate_mgl",
        unit: "mg/L",
        aliases: &["nitrates"],
    },
    FieldSpec {
        name: "phosphate_mgl",
        unit: "mg/L",
        aliases: &["phosphates"],
    },
    FieldSpec {
        name: "heavy_metals_ugl",
        unit: "µg/L",
        aliases: &["heavy_metals"],
    },
    FieldSpec {
        name: "energy_kwh",
        unit: "kWh",
        aliases: &["kwh"],
    },
    FieldSpec {
        name: "voltage_v",
        unit: "V",
        aliases: &["voltage"],
    },
    FieldSpec {
        name: "current_a",
        unit: "A",
        aliases: &["current"],
    },
    FieldSpec {
        name: "power_factor",
        unit: "",
        aliases: &[],
    },
    FieldSpec {
        name: "occupancy",
        unit: "persons",
        aliases: &[],
    },
    FieldSpec {
        name: "outdoor_temperature_c",
        unit: "°C",
        aliases: &[],
    },
    FieldSpec {
        name: "humidity_pct",
        unit: "%",
        aliases: &[],
    },
    FieldSpec {
        name: "battery_level",
        unit: "%",
        aliases: &["battery"],
    },
    FieldSpec {
        name: "signal_strength_dbm",
        unit: "dBm",
        aliases: &["signal_strength", "rssi"],
    },
];

/// Resolve a payload key (any case, canonical name or alias) to its canonical field index.
#[must_use]
pub fn canonical_index(key: &str) -> Option<usize> {
    CANONICAL_FIELDS.iter().position(|f| {
        f.name.eq_ignore_ascii_case(key) || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(key))
    })
}

/// The canonical index of a canonical name (exact match), for code that knows the names.
#[must_use]
pub fn index_of(name: &str) -> Option<usize> {
    CANONICAL_FIELDS.iter().position(|f| f.name == name)
}

/// At most this many measurement fields per reading (canonical + unknown).
pub const MAX_FIELDS: usize = 64;
/// Payloads larger than this are rejected unread.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The sensor kinds of DESIGN.md §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    WaterFlow,
    WaterQuality,
    Energy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::WaterFlow, Kind::WaterQuality, Kind::Energy];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WaterFlow => "water_flow",
            Kind::WaterQuality => "water_quality",
            Kind::Energy => "energy",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "water_flow" => Some(Kind::WaterFlow),
            "water_quality" => Some(Kind::WaterQuality),
            "energy" => Some(Kind::Energy),
            _ => None,
        }
    }

    /// The canonical fields the kind's models and rolling features use.
    #[must_use]
    pub fn model_fields(self) -> &'static [&'static str] {
        match self {
            Kind::WaterFlow => &[
                "pressure_bar",
                "flow_rate_lps",
                "temperature_c",
                "total_flow_m3",
            ],
            Kind::WaterQuality => &[
                "ph",
                "turbidity_ntu",
                "dissolved_oxygen_mgl",
                "conductivity_uscm",
                "chlorine_mgl",
                "redox_mv",
                "temperature_c",
            ],
            Kind::Energy => &[
                "energy_kwh",
                "occupancy",
                "outdoor_temperature_c",
                "humidity_pct",
                "voltage_v",
                "current_a",
                "power_factor",
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_case_insensitively() {
        assert_eq!(
            canonical_index("pH").map(|i| CANONICAL_FIELDS[i].name),
            Some("ph")
        );
        assert_eq!(
            canonical_index("Temp").map(|i| CANONICAL_FIELDS[i].name),
            Some("temperature_c")
        );
        assert_eq!(
            canonical_index("RSSI").map(|i| CANONICAL_FIELDS[i].name),
            Some("signal_strength_dbm")
        );
        assert_eq!(canonical_index("nope"), None);
    }

    #[test]
    fn aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in CANONICAL_FIELDS {
            assert!(seen.insert(f.name.to_ascii_lowercase()));
            for a in f.aliases {
                assert!(seen.insert(a.to_ascii_lowercase()), "{a}");
            }
        }
    }

    #[test]
    fn model_fields_are_canonical() {
        for k in Kind::ALL {
            for f in k.model_fields() {
                assert!(index_of(f).is_some(), "{f}");
            }
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}
