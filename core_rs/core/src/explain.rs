//! Plain-words explanations of a verdict: the features that pushed a model towards its alert
//! (Saabas contributions from [`crate::trees::Ensemble::contributions`]) described with their
//! values, e.g. "flow_rate_lps 152.3 L/s, 38% above its window mean" or "pressure_bar delta −0.40 bar".

use std::fmt::Write as _;

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

/// `a` (≥ 0) with `d` decimals (d ≤ 3), exactly as `format!("{a:.d$}")` writes it (the exact
/// binary value rounded half to even) without the formatting machinery: `a = m·2^e` scaled by
/// `10^d` is an integer product, rounded by its shifted-out bits.
fn fixed(out: &mut String, a: f64, d: usize) {
    const POW10: [u64; 4] = [1, 10, 100, 1000];
    if !(0.0..1e15).contains(&a) || d >= POW10.len() {
        // writing into a String cannot fail
        let _ = write!(out, "{a:.d$}");
        return;
    }
    let bits = a.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (m, e) = if biased == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), biased - 1075)
    };
    // a < 1e15 < 2^52, so e < 0: scaled = m·10^d / 2^sh
    let scaled = u128::from(m) * u128::from(POW10[d]);
    let sh = (-e) as u32;
    let q = if sh >= 128 {
        0 // below 2^-65: rounds to zero
    } else {
        let q = scaled >> sh;
        let rem = scaled & ((1u128 << sh) - 1);
        let half = 1u128 << (sh - 1);
        if rem > half || (rem == half && q & 1 == 1) {
            q + 1
        } else {
            q
        }
    };
    // q < 1e15·1000 + 1 fits in u64
    let q = q as u64;
    let p = POW10[d];
    out.push_str(itoa::Buffer::new().format(q / p));
    if d > 0 {
        out.push('.');
        let f = q % p;
        let digits = itoa::Buffer::new().format(f).len();
        for _ in digits..d {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(f));
    }
}

/// `v` with three significant figures, a real minus sign, no exponent for everyday magnitudes.
fn num(out: &mut String, v: f64) {
    let a = v.abs();
    if v < 0.0 {
        out.push('−');
    }
    let d = if a >= 100.0 || a == 0.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    fixed(out, a, d);
}

fn signed(out: &mut String, v: f64) {
    if v >= 0.0 {
        out.push('+');
    }
    num(out, v);
}

/// What a feature is, resolved once from its name (see [`Reason`]).
#[derive(Debug, Clone, PartialEq)]
enum What {
    HodDev,
    /// `day_dev` (0) or its mean over about the last hour or three, `day_dev_1h`/`_3h` (1, 3)
    DayDev(u8),
    /// The newest value, compared with the window mean at this store column.
    Last(Option<usize>),
    Mean,
    Std,
    Min,
    Max,
    Delta,
    Slope,
    Ewma,
    Zscore,
    Count,
    Dt,
    Hour,
    Dow,
    Weekend,
    Night,
    Ratio,
    Other,
}

/// How to describe one feature in words, resolved once per model (name parsing, unit and
/// column look-ups) so that describing a reading only formats its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    name: String,
    /// The field a per-field statistic is about (empty otherwise).
    field: String,
    unit: &'static str,
    /// The feature's column in the store row, if the store has it.
    col: Option<usize>,
    what: What,
}

impl Reason {
    /// The feature `name` of a store whose row columns are named `names`.
    #[must_use]
    pub fn new(name: &str, names: &[String]) -> Self {
        let col_of = |n: &str| names.iter().position(|x| x == n);
        let col = col_of(name);
        let (field, what) = if let Some(field) = name.strip_suffix("_hod_dev") {
            (field, What::HodDev)
        } else if let Some(field) = name.strip_suffix("_day_dev_1h") {
            (field, What::DayDev(1))
        } else if let Some(field) = name.strip_suffix("_day_dev_3h") {
            (field, What::DayDev(3))
        } else if let Some(field) = name.strip_suffix("_day_dev") {
            (field, What::DayDev(0))
        } else if let Some((field, stat)) = name.rsplit_once('_').filter(|(_, s)| STATS.contains(s))
        {
            let what = match stat {
                "last" => What::Last(col_of(&format!("{field}_mean"))),
                "mean" => What::Mean,
                "std" => What::Std,
                "min" => What::Min,
                "max" => What::Max,
                "delta" => What::Delta,
                "slope" => What::Slope,
                "ewma" => What::Ewma,
                _ => What::Zscore,
            };
            (field, what)
        } else {
            let what = match name {
                "count" => What::Count,
                "dt_s" => What::Dt,
                "hour" => What::Hour,
                "dow" => What::Dow,
                "weekend" => What::Weekend,
                "night" => What::Night,
                "pressure_flow_ratio" => What::Ratio,
                _ => What::Other,
            };
            ("", what)
        };
        Reason {
            name: name.to_owned(),
            field: field.to_owned(),
            unit: unit(field),
            col,
            what,
        }
    }

    /// Append the words for one reading whose store row is `row`.
    pub fn write(&self, out: &mut String, row: &[f64]) {
        let value = |c: Option<usize>| c.map(|c| row[c]).filter(|v| v.is_finite());
        let Some(v) = value(self.col) else {
            out.push_str(&self.name);
            out.push_str(" missing");
            return;
        };
        let (f, u) = (self.field.as_str(), self.unit);
        let field_then = |out: &mut String, words: &str| {
            out.push_str(f);
            out.push_str(words);
        };
        // writing into a String cannot fail
        match &self.what {
            What::HodDev => {
                field_then(out, " ");
                num(out, v.abs());
                out.push_str(u);
                out.push_str(if v >= 0.0 { " above" } else { " below" });
                out.push_str(" its usual level at this time of day");
            }
            What::DayDev(hour) => {
                field_then(
                    out,
                    match hour {
                        0 => " ",
                        1 => " over the last hour ",
                        _ => " over the last hours ",
                    },
                );
                num(out, v.abs());
                out.push_str(u);
                out.push_str(if v >= 0.0 { " above" } else { " below" });
                out.push_str(" its level at this time on earlier days");
            }
            What::Last(mean) => {
                field_then(out, " ");
                num(out, v);
                out.push_str(u);
                match value(*mean) {
                    Some(m) if m.abs() > 1e-12 && ((v - m) / m).abs() >= 0.005 => {
                        let pct = (v - m) / m.abs() * 100.0;
                        let dir = if pct >= 0.0 { "above" } else { "below" };
                        out.push_str(", ");
                        fixed(out, pct.abs(), 0);
                        out.push_str("% ");
                        out.push_str(dir);
                        out.push_str(" its window mean");
                    }
                    _ => {}
                }
            }
            What::Mean | What::Std | What::Min | What::Max | What::Ewma => {
                field_then(
                    out,
                    match self.what {
                        What::Mean => " window mean ",
                        What::Std => " variability σ ",
                        What::Min => " window minimum ",
                        What::Max => " window maximum ",
                        _ => " smoothed level ",
                    },
                );
                num(out, v);
                out.push_str(u);
            }
            What::Delta => {
                field_then(out, " delta ");
                signed(out, v);
                out.push_str(u);
            }
            What::Slope => {
                let per_h = v * 3600.0;
                field_then(
                    out,
                    if per_h >= 0.0 {
                        " rising "
                    } else {
                        " falling "
                    },
                );
                num(out, per_h.abs());
                out.push_str(u);
                out.push_str("/h");
            }
            What::Zscore => {
                field_then(out, " ");
                signed(out, v);
                out.push_str(" σ from its window mean");
            }
            What::Count => {
                let _ = write!(out, "{v:.0} readings in the window");
            }
            What::Dt => {
                num(out, v);
                out.push_str(" s since the previous reading");
            }
            What::Hour => {
                let _ = write!(out, "at {v:02.0}:00 UTC");
            }
            What::Dow => {
                const DAYS: [&str; 7] = [
                    "Monday",
                    "Tuesday",
                    "Wednesday",
                    "Thursday",
                    "Friday",
                    "Saturday",
                    "Sunday",
                ];
                out.push_str("on a ");
                out.push_str(DAYS.get(v as usize).copied().unwrap_or("day"));
            }
            What::Weekend => out.push_str(if v > 0.5 {
                "at the weekend"
            } else {
                "on a weekday"
            }),
            What::Night => out.push_str(if v > 0.5 {
                "at night"
            } else {
                "in the daytime"
            }),
            What::Ratio => {
                out.push_str("pressure/flow ratio ");
                num(out, v);
            }
            What::Other => {
                out.push_str(&self.name);
                out.push(' ');
                num(out, v);
            }
        }
    }
}

/// Describe the store feature `name` for one reading; `names`/`row` are the kind's full store row.
/// (The pipeline resolves a [`Reason`] per model feature once instead.)
#[must_use]
pub fn describe(name: &str, names: &[String], row: &[f64]) -> String {
    let mut out = String::new();
    Reason::new(name, names).write(&mut out, row);
    out
}

/// Which output of a model's contributions to read, and in which direction an alert lies.
#[derive(Debug, Clone, Copy)]
pub enum Toward {
    /// Output `index`; larger means more alarming.
    Up(usize),
    /// Output `index`; smaller means more alarming (isolation path length, P(normal)).
    Down(usize),
}

/// The up-to-`K` features that pushed one row most towards the alert, strongest first, from
/// that row's contributions `c` (`(n_features + 1) × n_out`, bias last, as
/// [`Ensemble::contributions`] lays out a row); features pushing the other way are left out, ties
/// go to the lower feature index (a stable sort). Returns the feature indices and their count.
#[must_use]
pub fn strongest<const K: usize>(c: &[f64], n_out: usize, toward: Toward) -> ([usize; K], usize) {
    let (o, sign) = match toward {
        Toward::Up(o) => (o, 1.0),
        Toward::Down(o) => (o, -1.0),
    };
    let o = o.min(n_out - 1);
    let nf = (c.len() / n_out).saturating_sub(1);
    let mut top = [(0usize, 0.0f64); K];
    let mut n = 0;
    for f in 0..nf {
        let v = sign * c[f * n_out + o];
        if v.is_nan() || v <= 0.0 {
            continue;
        }
        // the first slot this value beats strictly: equal values keep their feature order
        let Some(p) = (0..n).find(|&p| v > top[p].1).or((n < K).then_some(n)) else {
            continue;
        };
        for q in (p..n.min(K - 1)).rev() {
            top[q + 1] = top[q];
        }
        top[p] = (f, v);
        n = (n + 1).min(K);
    }
    let mut idx = [0usize; K];
    for (d, s) in idx.iter_mut().zip(&top) {
        *d = s.0;
    }
    (idx, n)
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
        let n = names(&["flow_rate_lps_day_dev", "flow_rate_lps_day_dev_1h"]);
        assert_eq!(
            describe("flow_rate_lps_day_dev", &n, &[3.0, -2.0]),
            "flow_rate_lps 3.00 L/s above its level at this time on earlier days"
        );
        assert_eq!(
            describe("flow_rate_lps_day_dev_1h", &n, &[3.0, -2.0]),
            "flow_rate_lps over the last hour 2.00 L/s below its level at this time on earlier days"
        );
        let n = names(&["flow_rate_lps_day_dev_3h"]);
        assert_eq!(
            describe("flow_rate_lps_day_dev_3h", &n, &[1.5]),
            "flow_rate_lps over the last hours 1.50 L/s above its level at this time on earlier days"
        );
    }

    #[test]
    fn strongest_is_a_stable_descending_sort_of_the_positive_side() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for case in 0..2000 {
            let n_out = 1 + case % 3;
            let nf = case % 9;
            let mut c = Vec::new();
            for _ in 0..(nf + 1) * n_out {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // few distinct values, so ties are common; some NaN and zeros
                c.push(match state % 7 {
                    0 => f64::NAN,
                    1 => 0.0,
                    k => (k as f64 - 4.0) * 0.5,
                });
            }
            for toward in [Toward::Up(n_out - 1), Toward::Down(0)] {
                let (o, sign) = match toward {
                    Toward::Up(o) => (o, 1.0),
                    Toward::Down(o) => (o, -1.0),
                };
                let mut want: Vec<(usize, f64)> = (0..nf)
                    .map(|f| (f, sign * c[f * n_out + o]))
                    .filter(|(_, v)| *v > 0.0)
                    .collect();
                want.sort_by(|a, b| b.1.total_cmp(&a.1));
                let want: Vec<usize> = want.into_iter().take(3).map(|(f, _)| f).collect();
                let (got, n) = strongest::<3>(&c, n_out, toward);
                assert_eq!(&got[..n], &want[..], "{c:?}");
            }
        }
    }

    #[test]
    fn fixed_writes_what_the_formatter_writes() {
        let mut state: u64 = 0x853c_49e6_748f_ea9b;
        let mut vals = vec![
            0.0,
            0.25,
            0.75,
            0.05,
            0.5,
            1.5,
            2.5,
            0.125,
            0.375,
            0.0625,
            0.0005,
            0.0015,
            9.995,
            99.995,
            999.95,
            1e-300,
            5e-324,
            123_456.789,
            999_999_999_999_999.9,
            1e15,
            1e300,
        ];
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            #[allow(clippy::cast_precision_loss)]
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            let scale = 10f64.powi((state % 20) as i32 - 6);
            vals.push(u * scale);
            // exact ties at every decimal count: k/2000 and friends
            vals.push(((state >> 40) % 20_000) as f64 / 2000.0);
            vals.push(f64::from_bits(state >> 2)); // any positive finite (or not) value
        }
        for a in vals {
            for d in 0..=3 {
                let mut got = String::new();
                fixed(&mut got, a, d);
                assert_eq!(got, format!("{a:.d$}"), "{a:e} with {d} decimals");
            }
        }
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
