//! Reading timestamps → nanoseconds since the Unix epoch: RFC 3339 strings and epoch numbers
//! (seconds, milliseconds, microseconds or nanoseconds, chosen by magnitude), converted exactly.
//!
//! The accepted range is what InfluxDB stores: 1970-01-01T00:00:00Z (0 ns) up to
//! 2262-04-11T23:47:16.854775807Z (`i64::MAX` ns).

use super::json::Num;

/// Why a timestamp was rejected (the text of the `bad_timestamp` message).
pub type TsError = &'static str;

/// Parse an RFC 3339 date-time: `YYYY-MM-DD(T|t| )hh:mm:ss[.f{1,9}](Z|z|±hh:mm)`.
pub fn parse_rfc3339(s: &[u8]) -> Result<i64, TsError> {
    parse_rfc3339_cached(s, &mut DateCache::default())
}

/// The last valid `YYYY-MM-DDThh:` prefix seen and its seconds since the epoch: the readings
/// of a batch mostly share the date and hour, so their validation and calendar arithmetic are
/// done once.
#[derive(Debug, Clone, Copy, Default)]
pub struct DateCache {
    prefix: Option<[u8; PREFIX]>,
    secs: i64,
}

/// `YYYY-MM-DDThh:` — everything up to the minutes.
const PREFIX: usize = 14;

const SHAPE: TsError = "not an RFC 3339 date-time (YYYY-MM-DDThh:mm:ss[.fff]Z or ±hh:mm offset)";

/// [`parse_rfc3339`] with a [`DateCache`]; the same result for every input.
pub fn parse_rfc3339_cached(s: &[u8], cache: &mut DateCache) -> Result<i64, TsError> {
    if s.len() < 20 {
        return Err(SHAPE);
    }
    let num = |a: usize, b: usize| -> Result<i64, TsError> {
        let mut v = 0i64;
        for &c in &s[a..b] {
            if !c.is_ascii_digit() {
                return Err(SHAPE);
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Ok(v)
    };
    let prefix = s.first_chunk::<PREFIX>();
    let base_secs = match (cache.prefix, prefix) {
        (Some(seen), Some(p)) if seen == *p => {
            // Same bytes as a prefix that passed every check below: only the rest can fail,
            // and its checks come after the prefix's in the full parse, so errors agree.
            if s[16] != b':' {
                return Err(SHAPE);
            }
            let (minute, second) = (num(14, 16)?, num(17, 19)?);
            if minute > 59 || second > 59 {
                return Err("time of day out of range");
            }
            cache.secs + minute * 60 + second
        }
        _ => {
            if s[4] != b'-'
                || s[7] != b'-'
                || !matches!(s[10], b'T' | b't' | b' ')
                || s[13] != b':'
                || s[16] != b':'
            {
                return Err(SHAPE);
            }
            let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
            let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
            if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
                return Err("date out of range (no such day)");
            }
            if hour > 23 || minute > 59 || second > 59 {
                return Err("time of day out of range");
            }
            let hour_secs = days_from_civil(year, month, day) * 86_400 + hour * 3600;
            cache.prefix = prefix.copied();
            cache.secs = hour_secs;
            hour_secs + minute * 60 + second
        }
    };
    let mut i = 19;
    let mut frac_ns = 0i64;
    if s[i] == b'.' {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return Err("fractional seconds must have 1 to 9 digits");
        }
        frac_ns = num(start, i)? * 10i64.pow(9 - u32::try_from(n).unwrap_or(9));
    }
    let offset_s = match &s[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: u8| {
                if c.is_ascii_digit() {
                    Ok(i64::from(c - b'0'))
                } else {
                    Err(SHAPE)
                }
            };
            let (oh, om) = (
                digit(*h1)? * 10 + digit(*h2)?,
                digit(*m1)? * 10 + digit(*m2)?,
            );
            if oh > 23 || om > 59 {
                return Err("UTC offset out of range");
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return Err(SHAPE),
    };
    let secs = base_secs - offset_s;
    // Years are at most 9999, so `secs` fits easily; the ns product may not.
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(frac_ns))
        .filter(|ns| *ns >= 0)
        .ok_or(RANGE)
}

const RANGE: TsError = "outside 1970-01-01 .. 2262-04-11 (the range InfluxDB stores)";

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An epoch number → ns. The unit follows the magnitude: |v| < 1e11 seconds, < 1e14
/// milliseconds, < 1e17 microseconds, otherwise nanoseconds. The decimal text is converted
/// exactly (no float rounding), rounding half to even below one nanosecond.
pub fn from_epoch_number(n: &Num<'_>) -> Result<i64, TsError> {
    let (mantissa, exp10) = if n.truncated {
        exact_digits(n.raw)?
    } else {
        (u128::from(n.mantissa), n.exp10)
    };
    if mantissa == 0 {
        return Ok(0);
    }
    if n.negative {
        return Err(RANGE);
    }
    // The value is mantissa × 10^exp10; its order of magnitude m satisfies 10^(m-1) ≤ v < 10^m.
    let order = i64::from(decimal_len(mantissa)) + i64::from(exp10);
    let scale = match order {
        ..=11 => 9,
        12..=14 => 6,
        15..=17 => 3,
        _ => 0,
    };
    let shift = i64::from(exp10) + scale;
    let ns: u128 = if shift >= 0 {
        if shift > 38 {
            return Err(RANGE);
        }
        mantissa
            .checked_mul(10u128.pow(u32::try_from(shift).map_err(|_| RANGE)?))
            .ok_or(RANGE)?
    } else if shift < -38 {
        0 // far below a nanosecond (only reachable for tiny values, which are seconds)
    } else {
        let div = 10u128.pow(u32::try_from(-shift).map_err(|_| RANGE)?);
        let (q, r) = (mantissa / div, mantissa % div);
        // Round half to even.
        if r * 2 > div || (r * 2 == div && q % 2 == 1) {
            q + 1
        } else {
            q
        }
    };
    i64::try_from(ns).map_err(|_| RANGE)
}

/// [`from_epoch_number`] for a plain non-negative integer token (no fraction, no exponent) of
/// `digits` ≤ 19 digits whose value is `v`: the same result (and the same error when out of
/// range), in 64-bit arithmetic.
#[inline]
pub fn from_epoch_integer(v: u64, digits: u32) -> Result<i64, TsError> {
    let scale: u32 = match digits {
        ..=11 => 9,
        12..=14 => 6,
        15..=17 => 3,
        _ => 0,
    };
    v.checked_mul(10u64.pow(scale))
        .and_then(|ns| i64::try_from(ns).ok())
        .ok_or(RANGE)
}

/// The decimal value of a number token as (digits, power of ten), exactly; at most 38
/// significant digits (more cannot be a sensible timestamp).
fn exact_digits(raw: &[u8]) -> Result<(u128, i32), TsError> {
    let mut mantissa: u128 = 0;
    let mut digits = 0u32;
    let mut exp10: i64 = 0;
    let mut in_frac = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'-' => {}
            b'.' => in_frac = true,
            d @ b'0'..=b'9' => {
                if digits > 0 || d != b'0' {
                    if digits >= 38 {
                        return Err("too many digits");
                    }
                    mantissa = mantissa * 10 + u128::from(d - b'0');
                    digits += 1;
                }
                if in_frac {
                    exp10 -= 1;
                }
            }
            b'e' | b'E' => {
                let mut e: i64 = 0;
                let mut negative = false;
                for &c in &raw[i + 1..] {
                    match c {
                        b'-' => negative = true,
                        b'0'..=b'9' => e = (e * 10 + i64::from(c - b'0')).min(1_000_000),
                        _ => {}
                    }
                }
                exp10 += if negative { -e } else { e };
                break;
            }
            _ => return Err("not a number"),
        }
        i += 1;
    }
    // Trailing zeros of the integer part were counted as digits: fine, they are exact.
    Ok((
        mantissa,
        i32::try_from(exp10.clamp(-2_000_000, 2_000_000)).unwrap_or(0),
    ))
}

fn decimal_len(v: u128) -> u32 {
    v.checked_ilog10().map_or(1, |l| l + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_cache_never_changes_a_result() {
        // Sequences of timestamps sharing (or almost sharing) a prefix, with broken tails: the
        // cached parse must agree with a fresh parse every time.
        let bases = [
            "2026-01-25T10:00:00Z",
            "2026-01-25T10:59:59.123456789Z",
            "2026-01-25T10:60:00Z",
            "2026-01-25T10:00:61Z",
            "2026-01-25T10:0x:00Z",
            "2026-01-25T10-00:00Z",
            "2026-01-25T10:00:00.Z",
            "2026-01-25T10:00:00+01:00",
            "2026-01-25T10:00:00-25:00",
            "2026-02-30T10:00:00Z",
            "2026-01-25T24:00:00Z",
            "1970-01-01T00:00:00+00:01",
            "2262-04-11T23:47:16.854775807Z",
            "2262-04-11T23:47:16.854775808Z",
            "2026-01-25 10:00:00z",
            "2026-01-25T10:00:00",
        ];
        let mut cache = DateCache::default();
        for round in 0..3 {
            for (n, a) in bases.iter().enumerate() {
                let b = bases[(n * 7 + round) % bases.len()];
                for s in [*a, b] {
                    assert_eq!(
                        parse_rfc3339_cached(s.as_bytes(), &mut cache),
                        parse_rfc3339(s.as_bytes()),
                        "{s}"
                    );
                }
            }
        }
    }

    use super::super::json::Scanner;
    use super::*;

    fn epoch(s: &str) -> Result<i64, TsError> {
        let mut sc = Scanner::new(s.as_bytes());
        from_epoch_number(&sc.number().unwrap())
    }

    #[test]
    fn the_integer_fast_path_agrees_with_the_general_one() {
        let mut x: u64 = 0x853C_49E6_748F_EA9B;
        let mut cases: Vec<String> = [
            "0",
            "1",
            "99999999999",
            "100000000000",
            "99999999999999",
            "100000000000000",
            "99999999999999999",
            "100000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "9999999999999999999",
            "9223372036",
            "9223372037",
            "9223372036854",
            "9223372036855",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 19 + 1) as u32;
            cases.push((x % 10u64.pow(digits)).to_string());
        }
        for s in cases {
            let mut sc = Scanner::new(s.as_bytes());
            let (v, d) = sc.plain_integer().expect("plain");
            assert_eq!(sc.pos(), s.len());
            assert_eq!(from_epoch_integer(v, d), epoch(&s), "{s}");
        }
        for s in ["01", "1.5", "1e3", "-1", "12345678901234567890", "", "x"] {
            let mut sc = Scanner::new(s.as_bytes());
            assert_eq!(sc.plain_integer(), None, "{s}");
            assert_eq!(sc.pos(), 0);
        }
    }

    #[test]
    fn rfc3339_examples() {
        let ok = |s: &str| parse_rfc3339(s.as_bytes()).unwrap();
        assert_eq!(ok("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ok("2026-01-25T10:30:00Z"), 1_769_337_000_000_000_000);
        assert_eq!(ok("2026-01-25 10:30:00.5Z"), 1_769_337_000_500_000_000);
        assert_eq!(
            ok("2026-01-25T12:30:00.123456789+02:00"),
            1_769_337_000_123_456_789
        );
        assert_eq!(ok("2026-01-25t05:30:00-05:00"), 1_769_337_000_000_000_000);
        assert_eq!(ok("2000-02-29T00:00:00Z"), 951_782_400_000_000_000);
        assert_eq!(ok("2262-04-11T23:47:16.854775807Z"), i64::MAX);
        for bad in [
            "2262-04-11T23:47:16.854775808Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-25T24:00:00Z",
            "2026-01-25T10:30:60Z",
            "2026-01-25T10:30:00",
            "2026-01-25T10:30:00.Z",
            "2026-01-25T10:30:00.1234567890Z",
            "2026-01-25T10:30:00+0200",
            "2026-01-25T10:30:00+24:00",
            "2026-1-25T10:30:00Z",
            "26-01-25T10:30:00Z",
            "2026-01-25T10:30:00ZZ",
            "",
        ] {
            assert!(parse_rfc3339(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_days_agree_with_a_day_by_day_walk() {
        let mut days = 0i64;
        for y in 1970..2300 {
            for m in 1..=12 {
                for d in 1..=days_in_month(y, m) {
                    assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn epoch_units_by_magnitude() {
        assert_eq!(epoch("1769337000"), Ok(1_769_337_000_000_000_000));
        assert_eq!(epoch("1769337000.25"), Ok(1_769_337_000_250_000_000));
        assert_eq!(epoch("1769337000123"), Ok(1_769_337_000_123_000_000));
        assert_eq!(epoch("1769337000123456"), Ok(1_769_337_000_123_456_000));
        assert_eq!(epoch("1769337000123456789"), Ok(1_769_337_000_123_456_789));
        assert_eq!(epoch("1.769337e9"), Ok(1_769_337_000_000_000_000));
        assert_eq!(epoch("0"), Ok(0));
        assert_eq!(epoch("-0.0"), Ok(0));
        assert!(epoch("99999999999").is_err()); // seconds, year 5138
        assert_eq!(epoch("100000000000"), Ok(100_000_000_000_000_000));
        // Sub-nanosecond digits round half to even.
        assert_eq!(epoch("1.0000000005"), Ok(1_000_000_000));
        assert_eq!(epoch("1.0000000015"), Ok(1_000_000_002));
        assert_eq!(epoch("1.00000000051"), Ok(1_000_000_001));
        assert_eq!(epoch("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(
            epoch("1769337000.123456789123456789123"),
            Ok(1_769_337_000_123_456_789)
        );
        assert!(epoch("9223372036854775808").is_err());
        assert!(epoch("-1").is_err());
        assert!(epoch("9300000000").is_err()); // seconds past 2262
        assert!(epoch("1e400").is_err());
        assert_eq!(epoch("1e-400"), Ok(0));
    }
}
