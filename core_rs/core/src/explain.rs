//! Plain-words explanations of a verdict: the features that pushed a model towards its alert
//! (Saabas contributions from [`crate::trees::Ensemble::contributions`]) described with their
//! values, e.g. "flow_rate_lps 152.3 L/s, 38% above its window mean" or "pressure_bar delta −0.40 bar".

use crate::trees::{Ensemble, TreeError};

/// The per-field statistics of the feature store, as feature-name suffixes.
const STATS: [&str; 9] = [
    "last", "mean", "std", "min", "max", "delta", "slope", "ewma", "zscore",
];

fn unit(field: &str) -> &'static str {
    const UNITS: [(&str, &str); 15] = [
        ("_bar", " bar"),
        ("_lps", " L/s"),
        ("_c", " °C"),
        ("_m3", " m³"),
        ("_ntu", " NTU"),
        ("_mgl", " mg/L"),
        ("_ugl", " µg/L"),
        ("_uscm", " µS/cm"),
        ("_mv", " mV"),
        ("_kwh", " kWh"),
        ("_v", " V"),
        ("_a", " A"),
        ("_pct", "%"),
        ("_dbm", " dBm"),
        ("_m3h", " m³/h"),
    ];
    UNITS
        .iter()
        .find(|(s, _)| field.ends_with(s))
        .map_or("", |(_, u)| u)
}

/// `v` with three significant figures, a real minus sign, no exponent for everyday magnitudes.
fn num(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{a:.1}")
    } else if a >= 1.0 {
        format!("{a:.2}")
    } else {
        format!("{a:.3}")
    };
    if v < 0.0 {
        format!("−{s}")
    } else {
        s
    }
}

fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", num(v))
    } else {
        num(v)
    }
}

fn lookup(names: &[String], row: &[f64], name: &str) -> Option<f64> {
    names
        .iter()
        .position(|n| n == name)
        .map(|i| row[i])
        .filter(|v| v.is_finite())
}

/// Describe the store feature `name` for one reading; `names`/`row` are the kind's full store row.
#[must_use]
pub fn describe(name: &str, names: &[String], row: &[f64]) -> String {
    let Some(v) = lookup(names, row, name) else {
        return format!("{name} missing");
    };
    if let Some(field) = name.strip_suffix("_hod_dev") {
        let u = unit(field);
        let dir = if v >= 0.0 { "above" } else { "below" };
        return format!(
            "{field} {}{u} {dir} its usual level at this time of day",
            num(v.abs())
        );
    }
    if let Some((field, stat)) = name.rsplit_once('_').filter(|(_, s)| STATS.contains(s)) {
        let u = unit(field);
        return match stat {
            "last" => match lookup(names, row, &format!("{field}_mean")) {
                Some(m) if m.abs() > 1e-12 && ((v - m) / m).abs() >= 0.005 => {
                    let pct = (v - m) / m.abs() * 100.0;
                    let dir = if pct >= 0.0 { "above" } else { "below" };
                    format!(
                        "{field} {}{u}, {:.0}% {dir} its window mean",
                        num(v),
                        pct.abs()
                    )
                }
                _ => format!("{field} {}{u}", num(v)),
            },
            "mean" => format!("{field} window mean {}{u}", num(v)),
            "std" => format!("{field} variability σ {}{u}", num(v)),
            "min" => format!("{field} window minimum {}{u}", num(v)),
            "max" => format!("{field} window maximum {}{u}", num(v)),
            "delta" => format!("{field} delta {}{u}", signed(v)),
            "slope" => {
                let per_h = v * 3600.0;
                let dir = if per_h >= 0.0 { "rising" } else { "falling" };
                format!("{field} {dir} {}{u}/h", num(per_h.abs()))
            }
            "ewma" => format!("{field} smoothed level {}{u}", num(v)),
            _ => format!("{field} {} σ from its window mean", signed(v)),
        };
    }
    match name {
        "count" => format!("{v:.0} readings in the window"),
        "dt_s" => format!("{} s since the previous reading", num(v)),
        "hour" => format!("at {v:02.0}:00 UTC"),
        "dow" => {
            const DAYS: [&str; 7] = [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ];
            format!("on a {}", DAYS.get(v as usize).copied().unwrap_or("day"))
        }
        "weekend" => (if v > 0.5 {
            "at the weekend"
        } else {
            "on a weekday"
        })
        .to_owned(),
        "night" => (if v > 0.5 {
            "at night"
        } else {
            "in the daytime"
        })
        .to_owned(),
        "pressure_flow_ratio" => format!("pressure/flow ratio {}", num(v)),
        _ => format!("{name} {}", num(v)),
    }
}

/// Which output of a model's contributions to read, and in which direction an alert lies.
#[derive(Debug, Clone, Copy)]
pub enum Toward {
    /// Output `index`; larger means more alarming.
    Up(usize),
    /// Output `index`; smaller means more alarming (isolation path length, P(normal)).
    Down(usize),
}

/// Indices (into the model's features) of the up-to-`k` features that pushed the row most towards
/// the alert, strongest first; features pushing the other way are left out.
///
/// # Errors
/// `x` does not have the model's number of features.
pub fn top_features(
    model: &Ensemble,
    x: &[f64],
    toward: Toward,
    k: usize,
) -> Result<Vec<usize>, TreeError> {
    let c = model.contributions(x, 1)?;
    let n_out = model.contribution_outputs();
    let nf = model.n_features();
    let (o, sign) = match toward {
        Toward::Up(o) => (o, 1.0),
        Toward::Down(o) => (o, -1.0),
    };
    let o = o.min(n_out - 1);
    let mut idx: Vec<(usize, f64)> = (0..nf)
        .map(|f| (f, sign * c[f * n_out + o]))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(idx.into_iter().take(k).map(|(f, _)| f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn last_is_compared_with_its_window_mean() {
        let n = names(&["flow_rate_lps_last", "flow_rate_lps_mean"]);
        assert_eq!(
            describe("flow_rate_lps_last", &n, &[138.0, 100.0]),
            "flow_rate_lps 138.0 L/s, 38% above its window mean"
        );
        assert_eq!(
            describe("flow_rate_lps_last", &n, &[62.0, 100.0]),
            "flow_rate_lps 62.00 L/s, 38% below its window mean"
        );
    }

    #[test]
    fn stats_read_as_words_with_units_and_signs() {
        let n = names(&[
            "pressure_bar_delta",
            "pressure_bar_slope",
            "ph_zscore",
            "night",
            "hour",
        ]);
        let row = [-0.4, -0.001, 3.2, 1.0, 3.0];
        assert_eq!(
            describe("pressure_bar_delta", &n, &row),
            "pressure_bar delta −0.400 bar"
        );
        assert_eq!(
            describe("pressure_bar_slope", &n, &row),
            "pressure_bar falling 3.60 bar/h"
        );
        assert_eq!(
            describe("ph_zscore", &n, &row),
            "ph +3.20 σ from its window mean"
        );
        assert_eq!(describe("night", &n, &row), "at night");
        assert_eq!(describe("hour", &n, &row), "at 03:00 UTC");
        let n = names(&["flow_rate_lps_hod_dev"]);
        assert_eq!(
            describe("flow_rate_lps_hod_dev", &n, &[12.5]),
            "flow_rate_lps 12.50 L/s above its usual level at this time of day"
        );
        assert_eq!(
            describe("flow_rate_lps_hod_dev", &n, &[-0.5]),
            "flow_rate_lps 0.500 L/s below its usual level at this time of day"
        );
    }

    #[test]
    fn missing_values_say_so() {
        let n = names(&["turbidity_ntu_last"]);
        assert_eq!(
            describe("turbidity_ntu_last", &n, &[f64::NAN]),
            "turbidity_ntu_last missing"
        );
        assert_eq!(
            describe("unknown_feature", &n, &[1.0]),
            "unknown_feature missing"
        );
    }
}
