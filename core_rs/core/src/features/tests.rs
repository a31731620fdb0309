//! Unit tests of the feature store: hand-worked cases, a naive re-implementation on random
//! streams, stale handling, and the snapshot format (round trip, truncation, random bytes).

use super::*;
use std::collections::{HashMap as StdMap, VecDeque};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// Tiny deterministic generator (xorshift64*), so tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unif(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn feat(fs: &FeatureStore, row: &[f64], name: &str) -> f64 {
    let i = fs.feature_names().iter().position(|n| n == name).unwrap();
    row[i]
}

#[test]
fn names_and_validation() {
    let fs = FeatureStore::new(3, &s(&["pressure_bar", "ph"])).unwrap();
    assert_eq!(fs.n_features(), 2 * 13 + 7);
    assert_eq!(fs.feature_names()[0], "pressure_bar_last");
    assert_eq!(fs.feature_names()[8], "pressure_bar_zscore");
    assert_eq!(fs.feature_names()[9], "pressure_bar_hod_dev");
    assert_eq!(fs.feature_names()[10], "pressure_bar_day_dev");
    assert_eq!(fs.feature_names()[12], "pressure_bar_day_dev_3h");
    assert_eq!(fs.feature_names()[13], "ph_last");
    assert_eq!(fs.feature_names()[26], "count");
    assert_eq!(fs.feature_names()[32], "pressure_flow_ratio");
    assert_eq!(
        FeatureStore::new(1, &[]).unwrap_err(),
        FeatureError::Window(1)
    );
    assert!(matches!(
        FeatureStore::new(5, &s(&["pressure"])),
        Err(FeatureError::UnknownField(_))
    ));
    assert!(matches!(
        FeatureStore::new(5, &s(&["ph", "ph"])),
        Err(FeatureError::DuplicateField(_))
    ));
    let d = default_fields();
    assert_eq!(d.iter().filter(|f| *f == "temperature_c").count(), 1);
    assert_eq!(d.len(), 4 + 7 - 1 + 7);
}

#[test]
fn hand_worked_stream() {
    let mut fs = FeatureStore::new(3, &s(&["pressure_bar", "flow_rate_lps"])).unwrap();
    let n = fs.n_features();
    let mut out = vec![0.0; n];
    // 2024-01-06 is a Saturday; 23:00 UTC
    let t0: i64 = 1_704_582_000 * 1_000_000_000;
    assert!(fs.update_one("a", t0, &[2.0, 4.0], &mut out));
    assert_eq!(feat(&fs, &out, "pressure_bar_mean"), 2.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_std"), 0.0);
    assert!(feat(&fs, &out, "pressure_bar_delta").is_nan());
    assert!(feat(&fs, &out, "pressure_bar_slope").is_nan());
    assert_eq!(feat(&fs, &out, "pressure_bar_zscore"), 0.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_ewma"), 2.0);
    assert_eq!(feat(&fs, &out, "count"), 1.0);
    assert!(feat(&fs, &out, "dt_s").is_nan());
    assert_eq!(feat(&fs, &out, "hour"), 23.0);
    assert_eq!(feat(&fs, &out, "dow"), 5.0);
    assert_eq!(feat(&fs, &out, "weekend"), 1.0);
    assert_eq!(feat(&fs, &out, "night"), 1.0);
    assert_eq!(feat(&fs, &out, "pressure_flow_ratio"), 0.5);

    assert!(fs.update_one("a", t0 + 2_000_000_000, &[4.0, f64::NAN], &mut out));
    assert_eq!(feat(&fs, &out, "pressure_bar_mean"), 3.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_std"), 1.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_delta"), 2.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_slope"), 1.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_zscore"), 1.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_ewma"), 0.5 * 4.0 + 0.5 * 2.0);
    assert!(feat(&fs, &out, "flow_rate_lps_last").is_nan());
    assert_eq!(feat(&fs, &out, "flow_rate_lps_mean"), 4.0);
    assert!(feat(&fs, &out, "flow_rate_lps_delta").is_nan());
    assert!(feat(&fs, &out, "flow_rate_lps_zscore").is_nan());
    assert_eq!(feat(&fs, &out, "flow_rate_lps_ewma"), 4.0);
    assert_eq!(feat(&fs, &out, "dt_s"), 2.0);
    assert!(feat(&fs, &out, "pressure_flow_ratio").is_nan());

    // stale: equal timestamp and older
    assert!(!fs.update_one("a", t0 + 2_000_000_000, &[1.0, 1.0], &mut out));
    assert!(out.iter().all(|v| v.is_nan()));
    assert!(!fs.update_one("a", t0, &[1.0, 1.0], &mut out));
    assert_eq!(fs.stale_count(), 2);

    // window 3 evicts the first reading on the fourth fold
    fs.update_one("a", t0 + 3_000_000_000, &[6.0, 0.0], &mut out);
    assert!(feat(&fs, &out, "pressure_flow_ratio").is_nan()); // flow == 0
    fs.update_one("a", t0 + 4_000_000_000, &[8.0, 1.0], &mut out);
    assert_eq!(feat(&fs, &out, "count"), 3.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_min"), 4.0);
    assert_eq!(feat(&fs, &out, "pressure_bar_mean"), 6.0);
    assert_eq!(feat(&fs, &out, "flow_rate_lps_mean"), 0.5);
    assert_eq!(fs.n_sensors(), 1);
}

/// Naive reference: the readings of the window in a deque, every stat from scratch, slope by
/// the normal-equation formula (a different computation from the store's centred one).
/// One sensor of the naive reference: its window of (timestamp, values), its EWMAs and its
/// hour-of-day profile (a map keyed by (field, hour)), its once-a-day profile (keyed the same:
/// profile, the values of the slot's latest day, that day) and the day deviation's means
/// (keyed by (field, τ in hours)).
type NaiveSensor = (
    VecDeque<(i64, Vec<f64>)>,
    Vec<f64>,
    StdMap<(usize, i64), f64>,
    StdMap<(usize, i64), (f64, Vec<f64>, i64)>,
    StdMap<(usize, u8), f64>,
);

#[derive(Default)]
struct Naive {
    ring: StdMap<String, NaiveSensor>,
}

impl Naive {
    fn update(
        &mut self,
        w: usize,
        fields: &[String],
        id: &str,
        ts: i64,
        v: &[f64],
    ) -> Option<Vec<f64>> {
        let k = v.len();
        let (q, ew, prof, day_prof, means) = self.ring.entry(id.to_owned()).or_insert_with(|| {
            (
                VecDeque::new(),
                vec![f64::NAN; k],
                StdMap::new(),
                StdMap::new(),
                StdMap::new(),
            )
        });
        if let Some((last_ts, _)) = q.back() {
            if ts <= *last_ts {
                return None;
            }
        }
        let prev = q.back().cloned();
        q.push_back((ts, v.to_vec()));
        if q.len() > w {
            q.pop_front();
        }
        let alpha = 2.0 / (w as f64 + 1.0);
        let mut out = Vec::new();
        for j in 0..k {
            if !v[j].is_nan() {
                ew[j] = if ew[j].is_nan() {
                    v[j]
                } else {
                    alpha * v[j] + (1.0 - alpha) * ew[j]
                };
            }
            let pts: Vec<(f64, f64)> = q
                .iter()
                .filter(|(_, x)| !x[j].is_nan())
                .map(|(t, x)| ((t - ts) as f64 / 1e9, x[j]))
                .collect();
            let n = pts.len() as f64;
            let (mean, std, lo, hi, slope, dev) = if pts.is_empty() {
                (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN)
            } else {
                // shifted by the reading's own value (or the oldest point): the conditioning a
                // z-score of `1e6 + noise` data needs
                let c = if v[j].is_nan() { pts[0].1 } else { v[j] };
                let dm = pts.iter().map(|p| p.1 - c).sum::<f64>() / n;
                let mean = c + dm;
                let var = pts.iter().map(|p| ((p.1 - c) - dm).powi(2)).sum::<f64>() / n;
                let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
                let st: f64 = pts.iter().map(|p| p.0).sum();
                let sv: f64 = pts.iter().map(|p| (p.1 - c) - dm).sum();
                let stt: f64 = pts.iter().map(|p| p.0 * p.0).sum();
                let stv: f64 = pts.iter().map(|p| p.0 * ((p.1 - c) - dm)).sum();
                let den = n * stt - st * st;
                let slope = if pts.len() < 2 || den == 0.0 {
                    f64::NAN
                } else {
                    (n * stv - st * sv) / den
                };
                (
                    mean,
                    if lo == hi { 0.0 } else { var.sqrt() },
                    lo,
                    hi,
                    slope,
                    (v[j] - c) - dm,
                )
            };
            let delta = prev.as_ref().map_or(f64::NAN, |p| v[j] - p.1[j]);
            let z = if v[j].is_nan() {
                f64::NAN
            } else if std == 0.0 {
                0.0
            } else {
                dev / std
            };
            let secs = ts.div_euclid(1_000_000_000);
            let weekend = (secs.div_euclid(86_400) + 3).rem_euclid(7) >= 5;
            let hour_of_day = secs.rem_euclid(86_400) / 900 + if weekend { 96 } else { 0 };
            let hod = match prof.get(&(j, hour_of_day)) {
                Some(p) if !v[j].is_nan() => v[j] - p,
                _ => f64::NAN,
            };
            if !v[j].is_nan() {
                let e = prof.entry((j, hour_of_day)).or_insert(v[j]);
                *e = 0.25 * v[j] + 0.75 * *e;
            }
            let day = secs.div_euclid(86_400);
            let (p, seen, on) =
                day_prof
                    .entry((j, hour_of_day))
                    .or_insert((f64::NAN, Vec::new(), i64::MIN));
            if *on != day {
                if !seen.is_empty() {
                    let m = seen.iter().sum::<f64>() / seen.len() as f64;
                    *p = if p.is_nan() { m } else { 0.5 * m + 0.5 * *p };
                }
                seen.clear();
                *on = day;
            }
            let dd = v[j] - *p; // NaN when either is
            if !v[j].is_nan() {
                seen.push(v[j]);
            }
            let mut smooth = [f64::NAN; 2];
            for (m, tau) in smooth.iter_mut().zip([1u8, 3]) {
                let e = means.entry((j, tau)).or_insert(f64::NAN);
                if !dd.is_nan() {
                    let keep = prev.as_ref().map_or(f64::NAN, |p| {
                        (-((ts - p.0) as f64 / 1e9) / (3600.0 * f64::from(tau))).exp()
                    });
                    *e = if e.is_nan() || keep.is_nan() {
                        dd
                    } else {
                        keep * *e + (1.0 - keep) * dd
                    };
                }
                *m = *e;
            }
            out.extend([v[j], mean, std, lo, hi, delta, slope, ew[j], z, hod, dd]);
            out.extend(smooth);
        }
        out.push(q.len() as f64);
        out.push(prev.map_or(f64::NAN, |p| (ts - p.0) as f64 / 1e9));
        let secs = ts.div_euclid(1_000_000_000);
        let hour = secs.rem_euclid(86_400) / 3600;
        let dow = (secs.div_euclid(86_400) + 3).rem_euclid(7);
        out.extend([
            hour as f64,
            dow as f64,
            (dow >= 5) as u8 as f64,
            f64::from(u8::from(!(6..22).contains(&hour))),
        ]);
        let p = fields.iter().position(|f| f == "pressure_bar");
        let f = fields.iter().position(|f| f == "flow_rate_lps");
        out.push(match (p, f) {
            (Some(p), Some(f)) if v[f] != 0.0 => v[p] / v[f],
            _ => f64::NAN,
        });
        Some(out)
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 + 1e-9 * b.abs()
}

fn random_stream(seed: u64, n: usize, n_sensors: usize, k: usize) -> Vec<(String, i64, Vec<f64>)> {
    let mut rng = Rng(seed);
    let mut clock = vec![1_700_000_000_000_000_000i64; n_sensors];
    (0..n)
        .map(|_| {
            let sid = (rng.next() % n_sensors as u64) as usize;
            // irregular steps, sometimes backwards (out of order) or repeated (duplicate)
            let r = rng.unif();
            let step = if r < 0.05 {
                -2_000_000_000
            } else if r < 0.08 {
                0
            } else {
                (rng.unif() * 5e9) as i64 + 1
            };
            clock[sid] += step;
            let vals = (0..k)
                .map(|j| {
                    if rng.unif() < 0.2 {
                        f64::NAN
                    } else {
                        1e6 * (j as f64) + rng.unif() * 10.0
                    }
                })
                .collect();
            (format!("s{sid}"), clock[sid], vals)
        })
        .collect()
}

#[test]
fn matches_naive_reference_on_random_streams() {
    let fields = s(&["pressure_bar", "flow_rate_lps", "ph"]);
    for (seed, w) in [(1u64, 2usize), (7, 5), (42, 17)] {
        let mut fs = FeatureStore::new(w, &fields).unwrap();
        let mut naive = Naive::default();
        let mut out = vec![0.0; fs.n_features()];
        let mut stale = 0;
        for (id, ts, v) in random_stream(seed, 3000, 9, fields.len()) {
            let ok = fs.update_one(&id, ts, &v, &mut out);
            match naive.update(w, &fields, &id, ts, &v) {
                None => {
                    stale += 1;
                    assert!(!ok && out.iter().all(|x| x.is_nan()));
                }
                Some(r) => {
                    assert!(ok);
                    for (i, (a, b)) in out.iter().zip(&r).enumerate() {
                        assert!(close(*a, *b), "{} {a} vs {b}", fs.feature_names()[i]);
                    }
                }
            }
        }
        assert!(stale > 0);
        assert_eq!(fs.stale_count(), stale);
        assert_eq!(fs.n_sensors(), 9);
    }
}

fn batch_of(stream: &[(String, i64, Vec<f64>)], fields: &[String]) -> ReadingBatch {
    let mut batch = ReadingBatch::default();
    for (i, (sensor, ts, values)) in stream.iter().enumerate() {
        let row: Vec<(&str, f64)> = fields
            .iter()
            .zip(values)
            .map(|(f, v)| (f.as_str(), *v))
            .collect();
        batch.push_reading(
            sensor,
            Kind::WaterFlow,
            "",
            "",
            *ts,
            i32::try_from(i).unwrap(),
            &row,
        );
    }
    batch
}

#[test]
fn update_rows_equals_update_one_and_handles_absent_columns() {
    let fields = s(&["pressure_bar", "flow_rate_lps"]);
    let stream = random_stream(3, 500, 4, 2);
    // the batch lacks flow entirely and has an extra column the store ignores
    let batch = batch_of(&stream, &s(&["pressure_bar", "ph"]));
    let mut a = FeatureStore::new(6, &fields).unwrap();
    let mut b = a.clone();
    let rows: Vec<usize> = (0..stream.len()).step_by(2).collect();
    let mut x = vec![123.0]; // appended to, not overwritten
    let folded = a.update_rows(&batch, &rows, &mut x);
    assert_eq!(x.len(), 1 + rows.len() * a.n_features());
    let mut out = vec![0.0; b.n_features()];
    for (k, &i) in rows.iter().enumerate() {
        let ok = b.update_one(
            &stream[i].0,
            stream[i].1,
            &[stream[i].2[0], f64::NAN],
            &mut out,
        );
        assert_eq!(ok, folded[k]);
        let got = &x[1 + k * out.len()..1 + (k + 1) * out.len()];
        assert!(got
            .iter()
            .zip(&out)
            .all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}

#[test]
fn hour_of_day_profile_by_hand() {
    const H: i64 = 3_600_000_000_000;
    let mut fs = FeatureStore::new(3, &s(&["flow_rate_lps"])).unwrap();
    let mut out = vec![0.0; fs.n_features()];
    let hod = |out: &[f64]| out[9];
    fs.update_one("a", 2 * H, &[10.0], &mut out);
    assert!(hod(&out).is_nan()); // nothing seen at 02:00 yet
    fs.update_one("a", 2 * H + H / 4, &[50.0], &mut out);
    assert!(hod(&out).is_nan()); // another quarter-hour
    fs.update_one("a", 26 * H, &[14.0], &mut out); // 02:00 the next day (1970-01-02, a Friday)
    assert_eq!(hod(&out), 4.0);
    fs.update_one("a", 50 * H, &[99.0], &mut out); // Saturday 02:00: the weekend profile
    assert!(hod(&out).is_nan());
    fs.update_one("a", 170 * H, &[f64::NAN], &mut out); // missing: NaN, slot unchanged
    assert!(hod(&out).is_nan());
    fs.update_one("a", 194 * H, &[11.0], &mut out); // Friday 02:00 a week later
    assert_eq!(hod(&out), 11.0 - (0.25 * 14.0 + 0.75 * 10.0));
}

#[test]
fn non_finite_values_count_as_missing() {
    let mut fs = FeatureStore::new(4, &s(&["ph"])).unwrap();
    let mut out = vec![0.0; fs.n_features()];
    fs.update_one("a", 1, &[7.0], &mut out);
    fs.update_one("a", 2, &[f64::INFINITY], &mut out);
    assert!(out[0].is_nan());
    assert_eq!(out[1], 7.0);
    assert_eq!(out[7], 7.0); // ewma unchanged
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    let mut fs = FeatureStore::new(4, &s(&["ph"])).unwrap();
    let mut out = vec![0.0; fs.n_features()];
    assert!(fs.update_one("a", i64::MIN, &[1.0], &mut out));
    assert!(fs.update_one("a", i64::MAX, &[2.0], &mut out));
    assert!(out[14].is_finite() && out[14] > 1.8e10); // dt_s
    assert!((0.0..24.0).contains(&out[15]));
}

#[test]
fn snapshot_round_trip_continues_bit_identically() {
    let fields = s(&["pressure_bar", "flow_rate_lps", "ph"]);
    let stream = random_stream(11, 2000, 20, 3);
    let (first, rest) = stream.split_at(1200);
    let mut a = FeatureStore::new(8, &fields).unwrap();
    let mut out = vec![0.0; a.n_features()];
    for (id, ts, v) in first {
        a.update_one(id, *ts, v, &mut out);
    }
    let blob = a.snapshot();
    let mut b = FeatureStore::restore(&blob).unwrap();
    assert_eq!(b.snapshot(), blob);
    assert_eq!(b.stale_count(), a.stale_count());
    assert_eq!(b.n_sensors(), a.n_sensors());
    let mut out2 = out.clone();
    for (id, ts, v) in rest {
        assert_eq!(
            a.update_one(id, *ts, v, &mut out),
            b.update_one(id, *ts, v, &mut out2)
        );
        assert!(out
            .iter()
            .zip(&out2)
            .all(|(p, q)| p.to_bits() == q.to_bits()));
    }
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn corrupt_snapshots_are_errors_not_panics() {
    let fields = s(&["ph", "redox_mv"]);
    let mut a = FeatureStore::new(3, &fields).unwrap();
    let mut out = vec![0.0; a.n_features()];
    for (i, id) in ["x", "y", "z", "x", "x", "x"].iter().enumerate() {
        a.update_one(id, i as i64, &[i as f64, 1.0], &mut out);
    }
    let blob = a.snapshot();
    for cut in 0..blob.len() {
        assert!(matches!(
            FeatureStore::restore(&blob[..cut]),
            Err(FeatureError::Snapshot(_))
        ));
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert!(FeatureStore::restore(&longer).is_err());
    let mut rng = Rng(99);
    for n in 0..2000usize {
        let len = (rng.next() % 300) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if n % 2 == 0 && junk.len() > 12 {
            junk[..8].copy_from_slice(SNAPSHOT_MAGIC); // get past the magic into the body
            junk[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        }
        let _ = FeatureStore::restore(&junk);
        // single-byte flips of a valid blob: either an error or a store that works
        let mut flipped = blob.clone();
        let at = (rng.next() as usize) % flipped.len();
        flipped[at] ^= 1 << (rng.next() % 8);
        if let Ok(mut s) = FeatureStore::restore(&flipped) {
            let mut o = vec![0.0; s.n_features()];
            s.update_one("x", 100, &vec![1.0; s.fields().len()], &mut o);
        }
    }
    let e = FeatureStore::restore(b"hello world, not a snapshot").unwrap_err();
    assert!(e.to_string().contains("magic"));
}

#[test]
fn the_avx2_build_of_the_row_loop_gives_the_same_bits() {
    // fold_many picks the AVX2 build where the CPU has it; the generic build must agree bit for bit
    let fields = s(&["pressure_bar", "flow_rate_lps", "temperature_c"]);
    let mut a = FeatureStore::new(12, &fields).unwrap();
    let mut b = a.clone();
    let stream = random_stream(5, 3000, 7, fields.len());
    let ids: Vec<String> = stream.iter().map(|r| r.0.clone()).collect();
    let ts: Vec<i64> = stream.iter().map(|r| r.1).collect();
    let cols: Vec<Vec<f64>> = (0..fields.len())
        .map(|j| stream.iter().map(|r| r.2[j]).collect())
        .collect();
    let views: Vec<Option<&[f64]>> = cols.iter().map(|c| Some(c.as_slice())).collect();
    let (mut xa, mut xb) = (Vec::new(), Vec::new());
    let fa = a.update_columns(&ids, &ts, &views, &mut xa).unwrap();
    let id = |i: usize| ids[i].as_str();
    let fb = b.fold_many_generic(ids.len(), &|k| k, &id, &ts, &views, &mut xb);
    assert_eq!(fa, fb);
    let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&xa), bits(&xb));
}
