//! Risk levels from model outputs (DESIGN.md §3): the leak-detection zone table for water flow,
//! probability bands plus hard limits for water quality, and anomaly-score bands for energy.

/// Ordered risk levels; the integer is what InfluxDB stores as `risk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RiskLevel {
    #[default]
    Low = 0,
    Medium = 1,
    High = 2,
    Critical = 3,
}

impl RiskLevel {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "LOW",
            RiskLevel::Medium => "MEDIUM",
            RiskLevel::High => "HIGH",
            RiskLevel::Critical => "CRITICAL",
        }
    }

    /// Alert severity label (lower case, as Grafana labels and the `alert` measurement use it).
    #[must_use]
    pub fn severity(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    #[must_use]
    pub fn from_u8(v: u8) -> RiskLevel {
        match v {
            0 => RiskLevel::Low,
            1 => RiskLevel::Medium,
            2 => RiskLevel::High,
            _ => RiskLevel::Critical,
        }
    }
}

/// One zone's row of the water-flow table: a level applies when burst > its burst bound or leak >
/// its leak bound (strict inequalities, as in the leak-detection design).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneThresholds {
    pub critical_burst: f64,
    pub critical_leak: f64,
    pub high_burst: f64,
    pub high_leak: f64,
    pub medium_leak: f64,
}

impl ZoneThresholds {
    /// The CRITICAL-zone row of DESIGN.md §3.
    pub const CRITICAL_ZONE: ZoneThresholds = ZoneThresholds {
        critical_burst: 0.3,
        critical_leak: 0.7,
        high_burst: 0.1,
        high_leak: 0.4,
        medium_leak: 0.2,
    };
    /// The STANDARD (any other zone) row of DESIGN.md §3.
    pub const STANDARD_ZONE: ZoneThresholds = ZoneThresholds {
        critical_burst: 0.5,
        critical_leak: 0.8,
        high_burst: 0.2,
        high_leak: 0.6,
        medium_leak: 0.3,
    };

    #[must_use]
    pub fn level(&self, leak: f64, burst: f64) -> RiskLevel {
        // NaN compares false everywhere, so a missing probability never raises the level.
        if burst > self.critical_burst || leak > self.critical_leak {
            RiskLevel::Critical
        } else if burst > self.high_burst || leak > self.high_leak {
            RiskLevel::High
        } else if leak > self.medium_leak {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }
}

/// Zone name → thresholds; zones not listed use `default` (the STANDARD row).
#[derive(Debug, Clone, PartialEq)]
pub struct ZonePolicy {
    pub zones: Vec<(String, ZoneThresholds)>,
    pub default: ZoneThresholds,
}

impl Default for ZonePolicy {
    fn default() -> Self {
        ZonePolicy {
            zones: vec![("CRITICAL".to_owned(), ZoneThresholds::CRITICAL_ZONE)],
            default: ZoneThresholds::STANDARD_ZONE,
        }
    }
}

impl ZonePolicy {
    #[must_use]
    pub fn thresholds(&self, zone: &str) -> &ZoneThresholds {
        self.zones
            .iter()
            .find(|(z, _)| z == zone)
            .map_or(&self.default, |(_, t)| t)
    }

    #[must_use]
    pub fn water_flow(&self, zone: &str, leak: f64, burst: f64) -> RiskLevel {
        self.thresholds(zone).level(leak, burst)
    }
}

/// Confirmation before paging (k-of-n): a water-flow verdict keeps the HIGH or CRITICAL level the
/// zone table gives it only when at least `k` of its sensor's last `n` verdicts (this one
/// included) reached HIGH by the table; otherwise it is reported as MEDIUM. A leak is slow and a
/// burst lasts, so real incidents pass at once after `k` readings, while one-reading blips (a
/// spike, a gust of demand) never page. `k = 1` (the default) is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub k: u32,
    pub n: u32,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence { k: 1, n: 1 }
    }
}

impl Persistence {
    /// Longest history a sensor keeps (one bit per verdict).
    pub const MAX_N: u32 = 64;

    /// # Errors
    /// Unless 1 <= k <= n <= 64.
    pub fn new(k: u32, n: u32) -> Result<Self, String> {
        if k == 0 || k > n || n > Self::MAX_N {
            return Err(format!(
                "persistence needs 1 <= k <= n <= {}, got k={k} n={n}",
                Self::MAX_N
            ));
        }
        Ok(Persistence { k, n })
    }

    #[must_use]
    pub fn is_off(&self) -> bool {
        self.k <= 1
    }

    /// Shift this verdict's table level into the sensor's `history` (bit 0 = newest, set when
    /// HIGH or above) and return the level to report.
    #[must_use]
    pub fn apply(&self, history: &mut u64, level: RiskLevel) -> RiskLevel {
        let high = level >= RiskLevel::High;
        *history = (*history << 1) | u64::from(high);
        let mask = if self.n >= 64 {
            u64::MAX
        } else {
            (1u64 << self.n) - 1
        };
        if high && (*history & mask).count_ones() < self.k {
            RiskLevel::Medium
        } else {
            level
        }
    }
}

/// Persistence per water-flow model: a leak builds up over hours (a few confirming readings
/// suffice), a burst is loud at once (many). Each model's level by the zone table — the level its
/// probability alone reaches (the table's rows are "burst > a or leak > b") — is confirmed with
/// its own history, and the verdict is the higher of the two confirmed levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaterFlowPersistence {
    pub leak: Persistence,
    pub burst: Persistence,
}

impl WaterFlowPersistence {
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.leak.is_off() && self.burst.is_off()
    }

    /// The level to report for `leak`/`burst` probabilities under `t`, updating the sensor's
    /// `history` (`[leak bits, burst bits]`).
    #[must_use]
    pub fn apply(
        &self,
        history: &mut [u64; 2],
        t: &ZoneThresholds,
        leak: f64,
        burst: f64,
    ) -> RiskLevel {
        let l = self.leak.apply(&mut history[0], t.level(leak, f64::NAN));
        let b = self.burst.apply(&mut history[1], t.level(f64::NAN, burst));
        l.max(b)
    }
}

/// Score bands for a single score in [0, 1]: a level applies when score >= its bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreBands {
    pub medium: f64,
    pub high: f64,
    pub critical: f64,
}

impl ScoreBands {
    pub const CONTAMINATION: ScoreBands = ScoreBands {
        medium: 0.3,
        high: 0.5,
        critical: 0.8,
    };
    pub const ENERGY: ScoreBands = ScoreBands {
        medium: 0.55,
        high: 0.62,
        critical: 0.7,
    };

    #[must_use]
    pub fn level(&self, score: f64) -> RiskLevel {
        if score >= self.critical {
            RiskLevel::Critical
        } else if score >= self.high {
            RiskLevel::High
        } else if score >= self.medium {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }
}

/// A hard limit on one water-quality field: outside [min, max] makes the reading at least `level`.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityLimit {
    pub field: String,
    pub min: f64,
    pub max: f64,
    pub level: RiskLevel,
}

/// The default hard limits: pH 6.5–8.5 (DESIGN.md §3) and the WHO guideline maxima for turbidity
/// (5 NTU) and free chlorine (5 mg/L).
#[must_use]
pub fn default_quality_limits() -> Vec<QualityLimit> {
    vec![
        QualityLimit {
            field: "ph".into(),
            min: 6.5,
            max: 8.5,
            level: RiskLevel::High,
        },
        QualityLimit {
            field: "turbidity_ntu".into(),
            min: f64::NEG_INFINITY,
            max: 5.0,
            level: RiskLevel::High,
        },
        QualityLimit {
            field: "chlorine_mgl".into(),
            min: f64::NEG_INFINITY,
            max: 5.0,
            level: RiskLevel::High,
        },
    ]
}

/// Confidence of a verdict from its dominant score p in [0, 1]: how far the model is from a coin toss
/// towards whichever side it chose, as a probability (max(p, 1 − p)).
#[must_use]
pub fn confidence(p: f64) -> f64 {
    if p.is_nan() {
        f64::NAN
    } else {
        p.max(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_table_matches_design() {
        let p = ZonePolicy::default();
        // CRITICAL zone
        assert_eq!(p.water_flow("CRITICAL", 0.0, 0.31), RiskLevel::Critical);
        assert_eq!(p.water_flow("CRITICAL", 0.71, 0.0), RiskLevel::Critical);
        assert_eq!(p.water_flow("CRITICAL", 0.7, 0.3), RiskLevel::High); // strict bounds
        assert_eq!(p.water_flow("CRITICAL", 0.41, 0.0), RiskLevel::High);
        assert_eq!(p.water_flow("CRITICAL", 0.0, 0.11), RiskLevel::High);
        assert_eq!(p.water_flow("CRITICAL", 0.21, 0.1), RiskLevel::Medium);
        assert_eq!(p.water_flow("CRITICAL", 0.2, 0.1), RiskLevel::Low);
        // STANDARD and any other zone
        for z in ["STANDARD", "LAB", ""] {
            assert_eq!(p.water_flow(z, 0.0, 0.51), RiskLevel::Critical);
            assert_eq!(p.water_flow(z, 0.81, 0.0), RiskLevel::Critical);
            assert_eq!(p.water_flow(z, 0.8, 0.5), RiskLevel::High);
            assert_eq!(p.water_flow(z, 0.61, 0.0), RiskLevel::High);
            assert_eq!(p.water_flow(z, 0.0, 0.21), RiskLevel::High);
            assert_eq!(p.water_flow(z, 0.31, 0.2), RiskLevel::Medium);
            assert_eq!(p.water_flow(z, 0.3, 0.2), RiskLevel::Low);
        }
    }

    #[test]
    fn nan_never_raises_risk() {
        let p = ZonePolicy::default();
        assert_eq!(p.water_flow("CRITICAL", f64::NAN, f64::NAN), RiskLevel::Low);
        assert_eq!(ScoreBands::CONTAMINATION.level(f64::NAN), RiskLevel::Low);
    }

    #[test]
    fn persistence_pages_on_k_of_the_last_n() {
        use RiskLevel::{Critical, High, Low, Medium};
        let p = Persistence::new(3, 5).unwrap();
        let mut h = 0u64;
        let seen: Vec<_> = [
            High, Critical, Low, High, Low, Critical, High, Low, Low, Low, High,
        ]
        .iter()
        .map(|&l| p.apply(&mut h, l))
        .collect();
        // the third HIGH-or-above of the last five pages; below HIGH is never changed
        assert_eq!(
            seen,
            [Medium, Medium, Low, High, Low, Critical, High, Low, Low, Low, Medium]
        );
        // off: the table's level unchanged
        let off = Persistence::default();
        assert!(off.is_off());
        let mut h = 0u64;
        assert_eq!(off.apply(&mut h, Critical), Critical);
        // a full 64-reading history
        let p = Persistence::new(64, 64).unwrap();
        let mut h = 0u64;
        let last = (0..64).map(|_| p.apply(&mut h, High)).last();
        assert_eq!(last, Some(High));
        assert_eq!(p.apply(&mut h, Low), Low);
        assert_eq!(p.apply(&mut h, High), Medium);
        assert!(Persistence::new(0, 3).is_err());
        assert!(Persistence::new(4, 3).is_err());
        assert!(Persistence::new(3, 65).is_err());
    }

    #[test]
    fn water_flow_persistence_confirms_each_model_on_its_own() {
        let t = ZoneThresholds::STANDARD_ZONE;
        let p = WaterFlowPersistence {
            leak: Persistence::new(2, 3).unwrap(),
            burst: Persistence::new(3, 3).unwrap(),
        };
        let mut h = [0u64; 2];
        // burst probability high three times: paged on the third; leak twice: on the second
        assert_eq!(p.apply(&mut h, &t, 0.0, 0.9), RiskLevel::Medium);
        assert_eq!(p.apply(&mut h, &t, 0.65, 0.9), RiskLevel::Medium);
        assert_eq!(p.apply(&mut h, &t, 0.65, 0.9), RiskLevel::Critical);
        assert_eq!(p.apply(&mut h, &t, 0.65, 0.0), RiskLevel::High); // the leak's own history
        assert_eq!(p.apply(&mut h, &t, 0.35, 0.0), RiskLevel::Medium); // the table's MEDIUM
                                                                       // off: exactly the zone table
        let off = WaterFlowPersistence::default();
        assert!(off.is_off());
        for (l, b) in [
            (0.0, 0.0),
            (0.61, 0.0),
            (0.81, 0.1),
            (0.0, 0.21),
            (0.31, 0.6),
        ] {
            assert_eq!(off.apply(&mut h, &t, l, b), t.level(l, b));
        }
    }

    #[test]
    fn bands_are_inclusive_lower_bounds() {
        let b = ScoreBands::CONTAMINATION;
        assert_eq!(b.level(0.29), RiskLevel::Low);
        assert_eq!(b.level(0.3), RiskLevel::Medium);
        assert_eq!(b.level(0.5), RiskLevel::High);
        assert_eq!(b.level(0.8), RiskLevel::Critical);
        assert!((confidence(0.2) - 0.8).abs() < 1e-15);
    }
}
