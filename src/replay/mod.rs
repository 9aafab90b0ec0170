//! `prescient replay`: what would prefetching do for this trace?
//!
//! Reads a trace (trace.rs), replays it through an LRU cache without and with prefetching
//! (sim.rs, on the proxy's own model), and prints hit ratios, precision, coverage and origin
//! load; `--sweep` adds a table over prediction thresholds; `--json` ends the output with one
//! JSON object.

pub mod sim;
pub mod trace;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;

use crate::prefetch::settings::{Threshold, DEFAULTS as PREFETCH};
use crate::tracking::model::{ModelConfig, DEFAULTS};
use crate::tracking::template::Templater;
use sim::{simulate, Capacity, SimOptions, SimResult};
use trace::Format;

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Trace file.
    #[arg(long)]
    pub trace: PathBuf,
    /// nasa | oracle | monitor | csv | accesslog
    #[arg(long)]
    pub format: Format,
    /// Cache size: N keys, N% of the distinct keys, or bytes (NB, NKiB, NMiB, NGiB).
    #[arg(long)]
    pub cache_size: String,
    /// Replay without prefetching only.
    #[arg(long)]
    pub no_prefetch: bool,
    /// The fetch threshold: "adaptive" (the proxy's controller, as `prefetch.min_probability
    /// = "adaptive"`) or a probability in (0, 1].
    #[arg(long, default_value = "adaptive")]
    pub threshold: String,
    /// The adaptive threshold's origin budget (`prefetch.max_load_factor`).
    #[arg(long, default_value_t = PREFETCH.max_load_factor)]
    pub max_load_factor: f64,
    /// Predicted keys at or above this probability are touched (kept warm, no origin load)
    /// when already cached; the threshold itself decides what is fetched.
    #[arg(long, default_value_t = PREFETCH.touch_probability)]
    pub touch_threshold: f64,
    /// Model order: 1, or 2 (falls back to 1).
    #[arg(long, default_value_t = DEFAULTS.order)]
    pub order: u8,
    /// Learn key-level transitions only.
    #[arg(long)]
    pub no_templates: bool,
    /// Extra template placeholder patterns (regex for a whole segment); repeatable.
    #[arg(long = "template-pattern")]
    pub template_patterns: Vec<String>,
    /// Predictions fetched per access at most (`prefetch.max_prefetch_per_schedule`).
    #[arg(long, default_value_t = PREFETCH.max_prefetch_per_schedule)]
    pub max_predictions: usize,
    /// Observations a state needs before it predicts.
    #[arg(long, default_value_t = DEFAULTS.min_support)]
    pub min_support: f64,
    /// Half-life of counts in trace seconds; 0 (the default here) disables aging. On the
    /// shipped traces aging only adds load (README); the proxy ages by default because live
    /// traffic drifts.
    #[arg(long, default_value_t = 0.0)]
    pub half_life: f64,
    /// A read within this many reads after a key counts as its successor (1: plain Markov).
    #[arg(long, default_value_t = DEFAULTS.lookahead)]
    pub lookahead: usize,
    /// Successors kept per state.
    #[arg(long, default_value_t = DEFAULTS.top_k)]
    pub top_k: usize,
    /// States per model table.
    #[arg(long, default_value_t = DEFAULTS.max_states)]
    pub max_states: usize,
    /// client: one context per client; global: all reads in one context.
    #[arg(long, default_value = "client")]
    pub context: String,
    /// Seconds of idleness after which a client's context starts afresh.
    #[arg(long, default_value_t = 1800.0)]
    pub stale_gap: f64,
    /// Also replay at each of these thresholds (comma-separated) and print a table.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5,0.6,0.8")]
    pub sweep: Option<Vec<f64>>,
    /// End the output with one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses `N`, `N%` (of `distinct` keys) or `N<unit>` bytes.
pub fn parse_capacity(s: &str, distinct: usize) -> Result<Capacity, String> {
    let bad = || format!("bad cache size '{s}' (N, N%, NB, NKiB, NMiB, NGiB)");
    let num = |t: &str| t.trim().parse::<f64>().map_err(|_| bad());
    if let Some(p) = s.strip_suffix('%') {
        let keys = (distinct as f64 * num(p)? / 100.0).floor() as u64;
        return Ok(Capacity::Keys(keys.max(1)));
    }
    for (unit, mult) in [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ] {
        if let Some(n) = s.strip_suffix(unit) {
            return Ok(Capacity::Bytes((num(n)? * mult as f64) as u64));
        }
    }
    s.trim().parse().map(Capacity::Keys).map_err(|_| bad())
}

fn options(a: &ReplayArgs, capacity: Capacity, distinct: usize) -> Result<SimOptions, String> {
    if !(1..=2).contains(&a.order) {
        return Err("--order must be 1 or 2".into());
    }
    let threshold = Threshold::parse(&a.threshold).map_err(|e| format!("--threshold: {e}"))?;
    if a.max_load_factor.is_nan() || a.max_load_factor < 1.0 {
        return Err("--max-load-factor must be at least 1".into());
    }
    let per_client = match a.context.as_str() {
        "client" => true,
        "global" => false,
        c => return Err(format!("--context must be client or global, not '{c}'")),
    };
    Ok(SimOptions {
        capacity,
        prefetch: !a.no_prefetch,
        model: ModelConfig {
            order: a.order,
            templates: !a.no_templates,
            min_support: a.min_support,
            half_life_secs: a.half_life,
            top_k: a.top_k.max(1),
            max_states: a.max_states.max(1),
            min_probability: threshold.floor(),
            touch_probability: a.touch_threshold,
            max_predictions: a.max_predictions,
            lookahead: a.lookahead.max(1),
        },
        per_client,
        stale_gap_secs: a.stale_gap,
        templater: Templater::new(&a.template_patterns)?,
        distinct_keys: distinct,
        adaptive: (threshold == Threshold::Adaptive).then_some(a.max_load_factor),
    })
}

/// Largest trace the replay inflates from gzip: a bound, since a small file can claim any size.
const MAX_TRACE_BYTES: u64 = 8 << 30;

/// A trace file as read, or inflated when it is gzip (the shipped copies in tests/data are),
/// failing past `max` bytes.
pub fn gunzip_if_gzipped(data: Vec<u8>, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Ok(data);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&data[..])
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("bad gzip: {e}"))?;
    if out.len() as u64 > max {
        return Err(format!("inflates past {max} bytes"));
    }
    Ok(out)
}

/// Runs the replay and returns what it prints.
pub fn run(a: &ReplayArgs) -> Result<String, String> {
    let data = std::fs::read(&a.trace).map_err(|e| format!("{}: {e}", a.trace.display()))?;
    let data = gunzip_if_gzipped(data, MAX_TRACE_BYTES)
        .map_err(|e| format!("{}: {e}", a.trace.display()))?;
    let trace = trace::read(&data, a.format)?;
    let distinct = trace
        .accesses
        .iter()
        .map(|x| &x.key)
        .collect::<HashSet<_>>()
        .len();
    let capacity = parse_capacity(&a.cache_size, distinct)?;
    let opts = options(a, capacity, distinct)?;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "trace     {} ({:?}): {} reads, {} distinct keys, {} clients, {} lines skipped",
        a.trace.display(),
        a.format,
        trace.accesses.len(),
        distinct,
        trace.clients,
        trace.skipped
    );
    let _ = writeln!(w, "cache     {capacity:?} (LRU)");
    let base = simulate(
        &trace.accesses,
        &SimOptions {
            prefetch: false,
            ..opts.clone()
        },
    );
    let _ = writeln!(
        w,
        "no prefetch: hit ratio {:.4} ({} hits, {} misses)",
        base.hit_ratio(),
        base.hits,
        base.misses
    );
    let mut json = serde_json::json!({
        "accesses": base.accesses,
        "distinct_keys": distinct,
        "hit_ratio_no_prefetch": base.hit_ratio(),
        "misses_no_prefetch": base.misses,
        "hit_ratio": base.hit_ratio(),
        "precision": 0.0,
        "coverage": 0.0,
        "load_factor": 1.0,
    });
    if opts.prefetch {
        let m = &opts.model;
        let _ = writeln!(
            w,
            "model     order {}, lookahead {}, templates {}, threshold {}, touch threshold {}, max predictions {}, min support {}, half-life {} s, top-k {}, context {}",
            m.order,
            m.lookahead,
            if m.templates { "on" } else { "off" },
            match opts.adaptive {
                Some(b) => format!("adaptive (budget {b}x)"),
                None => m.min_probability.to_string(),
            },
            m.touch_probability,
            m.max_predictions,
            m.min_support,
            m.half_life_secs,
            m.top_k,
            a.context
        );
        let r = simulate(&trace.accesses, &opts);
        let secs = r.elapsed.as_secs_f64();
        let f = Figures::of(&r, &base);
        let _ = writeln!(
            w,
            "prefetch:    hit ratio {:.4} ({} hits, {} misses, {} prefetches, {} used, {} evicted unused, {} touches)",
            f.hit_ratio, r.hits, r.misses, r.prefetches, r.prefetch_hits, r.prefetches_wasted, r.promotions
        );
        let _ = writeln!(
            w,
            "             precision {:.4}, coverage {:.4}, origin load {:.3}x",
            f.precision, f.coverage, f.load
        );
        if opts.adaptive.is_some() {
            let path: Vec<String> = r
                .thresholds
                .iter()
                .map(|(at, t)| format!("{t}@{at}"))
                .collect();
            let _ = writeln!(
                w,
                "threshold   {} (moves: threshold@read {})",
                r.thresholds.last().map_or(0.0, |t| t.1),
                path.join(" ")
            );
        }
        let _ = writeln!(
            w,
            "live score  top-1 {:.4}, top-k {:.4} over {} predicted transitions (of {})",
            r.score.top1_ratio(),
            r.score.topk_ratio(),
            r.score.predicted,
            r.score.transitions
        );
        let states = r.model.states().max(1);
        let _ = writeln!(
            w,
            "model size  {} states ({} order-2, {} key, {} template), {} bytes, {} bytes/state",
            r.model.states(),
            r.model.order2_states,
            r.model.key_states,
            r.model.template_states,
            r.model.bytes,
            r.model.bytes / states
        );
        let _ = writeln!(
            w,
            "speed       {:.0} reads/s with prefetch",
            r.accesses as f64 / secs.max(1e-9)
        );
        let fields = serde_json::json!({
            "hit_ratio": f.hit_ratio,
            "precision": f.precision,
            "coverage": f.coverage,
            "load_factor": f.load,
            "prefetches": r.prefetches,
            "touches": r.promotions,
            "top1_accuracy": r.score.top1_ratio(),
            "topk_accuracy": r.score.topk_ratio(),
            "model_states": r.model.states(),
            "model_bytes": r.model.bytes,
            "threshold": match opts.adaptive {
                Some(_) => serde_json::json!("adaptive"),
                None => serde_json::json!(opts.model.min_probability),
            },
            "threshold_moves": r.thresholds,
        });
        if let (Some(j), Some(f)) = (json.as_object_mut(), fields.as_object()) {
            j.extend(f.clone());
        }
    }
    if let Some(thresholds) = a.sweep.as_ref().filter(|_| opts.prefetch) {
        let _ = writeln!(w, "\nthreshold  hit ratio  precision  coverage  load");
        let mut rows = Vec::new();
        for &t in thresholds {
            let mut o = opts.clone();
            o.model.min_probability = t;
            o.adaptive = None;
            let f = Figures::of(&simulate(&trace.accesses, &o), &base);
            let _ = writeln!(
                w,
                "{t:>9}  {:>9.4}  {:>9.4}  {:>8.4}  {:.3}x",
                f.hit_ratio, f.precision, f.coverage, f.load
            );
            rows.push(serde_json::json!({
                "threshold": t,
                "hit_ratio": f.hit_ratio,
                "precision": f.precision,
                "coverage": f.coverage,
                "load_factor": f.load,
            }));
        }
        json["sweep"] = serde_json::Value::Array(rows);
    }
    if a.json {
        let _ = writeln!(w, "{json}");
    }
    Ok(out)
}

/// The ratios a replay reports, against the run without prefetching.
pub struct Figures {
    pub hit_ratio: f64,
    pub precision: f64,
    pub coverage: f64,
    pub load: f64,
}

impl Figures {
    pub fn of(r: &SimResult, base: &SimResult) -> Figures {
        let base_misses = base.misses.max(1) as f64;
        Figures {
            hit_ratio: r.hit_ratio(),
            precision: r.precision(),
            coverage: r.prefetch_hits as f64 / base_misses,
            load: (r.misses + r.prefetches) as f64 / base_misses,
        }
    }
}

#[cfg(test)]
mod gzip_tests {
    use super::gunzip_if_gzipped;
    use std::io::Write;

    #[test]
    fn gzip_is_inflated_within_its_bound() {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&[b'a'; 1000]).unwrap();
        let gz = z.finish().unwrap();
        assert_eq!(gunzip_if_gzipped(gz.clone(), 1000).unwrap().len(), 1000);
        assert!(gunzip_if_gzipped(gz.clone(), 999).is_err());
        assert_eq!(gunzip_if_gzipped(b"plain".to_vec(), 1).unwrap(), b"plain");
        assert!(gunzip_if_gzipped(gz[..10].to_vec(), 1000).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities() {
        assert_eq!(parse_capacity("91", 0), Ok(Capacity::Keys(91)));
        assert_eq!(parse_capacity("5%", 1821), Ok(Capacity::Keys(91)));
        assert_eq!(parse_capacity("128MiB", 0), Ok(Capacity::Bytes(128 << 20)));
        assert_eq!(parse_capacity("1.5KiB", 0), Ok(Capacity::Bytes(1536)));
        assert!(parse_capacity("lots", 0).is_err());
    }
}
