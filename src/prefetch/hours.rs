//! `[prefetch.hour_weights]`: how much prefetching is worth at each hour of the day (seed 001).
//!
//! Keys are hour ranges `"start-end"` (0-24, end exclusive; a range whose end is not after its
//! start wraps midnight: `"21-9"` is 21:00 to 09:00) or one hour `"7"`; values are weights (>= 0).
//! A weight scales each prediction's priority in the queue, the workers' rate and the origin
//! budget's extra load. An hour no range names weighs 1. TOML tables have no order, so ranges
//! may not overlap.

use std::collections::BTreeMap;

/// Weights for the 24 hours.
#[derive(Clone, Debug, PartialEq)]
pub struct HourWeights {
    by_hour: [f64; 24],
}

impl Default for HourWeights {
    fn default() -> Self {
        HourWeights { by_hour: [1.0; 24] }
    }
}

fn hour(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|h| *h <= 24)
        .ok_or_else(|| format!("'{s}' is not an hour (0-24)"))
}

impl HourWeights {
    /// Parses the table; an error names the bad key.
    pub fn parse(table: &BTreeMap<String, f64>) -> Result<HourWeights, String> {
        let mut w = HourWeights::default();
        let mut named = [false; 24];
        for (range, &weight) in table {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(format!("'{range}': the weight must be a number >= 0"));
            }
            let (start, end) = match range.split_once('-') {
                Some((a, b)) => (hour(a)? % 24, hour(b)? % 24),
                None => {
                    let h = hour(range)? % 24;
                    (h, (h + 1) % 24)
                }
            };
            let mut h = start;
            loop {
                if named[h as usize] {
                    return Err(format!("'{range}' overlaps another range at hour {h}"));
                }
                named[h as usize] = true;
                w.by_hour[h as usize] = weight;
                h = (h + 1) % 24;
                if h == end {
                    break;
                }
            }
        }
        Ok(w)
    }

    /// The weight at `hour` (0-23).
    pub fn at(&self, hour: u32) -> f64 {
        self.by_hour[(hour % 24) as usize]
    }

    /// Whether every hour weighs 1.
    pub fn is_flat(&self) -> bool {
        self.by_hour.iter().all(|&w| w == 1.0)
    }

    /// The hours as `range = weight` lines, merged where neighbours weigh the same.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        let mut start = 0;
        for h in 1..=24 {
            if h == 24 || self.by_hour[h] != self.by_hour[start] {
                out.push(format!("{start}-{h}={}", self.by_hour[start]));
                start = h;
            }
        }
        out.join(",")
    }
}

/// The hour of the day now (0-23), in UTC or the machine's local time.
pub fn hour_now(utc: bool) -> u32 {
    hour_of(std::time::SystemTime::now(), utc)
}

/// The hour of the day of `t`, in UTC or the machine's local time.
pub fn hour_of(t: std::time::SystemTime, utc: bool) -> u32 {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let offset = if utc { 0 } else { local_offset_secs(secs) };
    ((secs + offset).rem_euclid(86_400) / 3600) as u32
}

/// The local time zone's offset from UTC at `secs` (unix), from the C library.
fn local_offset_secs(secs: i64) -> i64 {
    #[cfg(unix)]
    {
        let t = secs as libc::time_t;
        // SAFETY: localtime_r writes into the struct it is given and reads `t`.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        if unsafe { !libc::localtime_r(&t, &mut tm).is_null() } {
            return tm.tm_gmtoff;
        }
    }
    let _ = secs;
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn ranges_wrap_midnight_and_unnamed_hours_weigh_one() {
        let w = HourWeights::parse(&table(&[("9-11", 1.5), ("21-9", 0.3), ("14", 2.0)])).unwrap();
        let expect = |h: u32| match h {
            9 | 10 => 1.5,
            21..=23 | 0..=8 => 0.3,
            14 => 2.0,
            _ => 1.0,
        };
        for h in 0..24 {
            assert_eq!(w.at(h), expect(h), "hour {h}");
        }
        assert_eq!(
            w.describe(),
            "0-9=0.3,9-11=1.5,11-14=1,14-15=2,15-21=1,21-24=0.3"
        );
        assert!(HourWeights::default().is_flat());
        assert!(HourWeights::parse(&table(&[("0-24", 1.0)]))
            .unwrap()
            .is_flat());
    }

    #[test]
    fn bad_tables_are_refused_with_the_key() {
        for (t, why) in [
            (table(&[("9-11", 1.0), ("10-12", 1.0)]), "overlaps"),
            (table(&[("25-3", 1.0)]), "not an hour"),
            (table(&[("a", 1.0)]), "not an hour"),
            (table(&[("1-2", -1.0)]), ">= 0"),
        ] {
            let e = HourWeights::parse(&t).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_hour_of_a_time_in_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 3 + 3600 * 13 + 59);
        assert_eq!(hour_of(t, true), 13);
    }
}
