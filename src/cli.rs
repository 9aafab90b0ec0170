//! The operator's CLI verbs (`prescient status | stats | warmup | prefetch-config | jobs`): each
//! talks to a running instance's HTTP API (`--admin URL`, the token from
//! `PRESCIENT_ADMIN_TOKEN`) and prints a readable table, or the API's JSON with `--json`.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value as J};

/// What one verb asks of the API.
#[derive(Debug, Clone)]
pub enum Verb {
    Status,
    Stats,
    Warmup {
        n: u32,
        confidence: Option<f64>,
    },
    PrefetchConfig {
        top: Option<u32>,
        confidence: Option<String>,
        enable: Option<bool>,
        rate: Option<f64>,
    },
    Jobs {
        run: Option<String>,
    },
}

/// Runs `verb` against the API at `admin`; the text to print, or the error to report.
pub fn run(admin: &str, token: Option<&str>, verb: &Verb, as_json: bool) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let api = Api {
            base: admin.trim_end_matches('/').to_string(),
            token: token.map(String::from),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        match verb {
            Verb::Status => {
                let st = api.get("/api/v1/status").await?;
                let hot = api.get("/api/v1/hotkeys?n=5").await.ok();
                let mut preds = Vec::new();
                for h in hot
                    .iter()
                    .flat_map(|h| h["hotkeys"].as_array().cloned().unwrap_or_default())
                {
                    let key = h["key"].as_str().unwrap_or_default().to_string();
                    let path = format!("/api/v1/predictions?key={}&n=3", encode(&key));
                    if let Ok(p) = api.get(&path).await {
                        preds.push((key, h["reads"].clone(), p));
                    }
                }
                if as_json {
                    let p: Vec<J> = preds.iter().map(|(_, _, p)| p.clone()).collect();
                    return Ok(pretty(
                        &json!({"status": st, "hotkeys": hot, "predictions": p}),
                    ));
                }
                Ok(status_text(&st, &preds))
            }
            Verb::Stats => {
                let s = api.get("/api/v1/stats").await?;
                Ok(if as_json { pretty(&s) } else { stats_text(&s) })
            }
            Verb::Warmup { n, confidence } => {
                let mut body = json!({ "n": n });
                if let Some(c) = confidence {
                    body["min_confidence"] = json!(c);
                }
                let r = api.post("/api/v1/warmup", &body).await?;
                if as_json {
                    return Ok(pretty(&r));
                }
                let keys: Vec<&str> = r["queued"]
                    .as_array()
                    .map(|a| a.iter().filter_map(J::as_str).collect())
                    .unwrap_or_default();
                let mut out = format!("Warm-up: {} keys queued for prefetching\n", keys.len());
                for k in keys {
                    let _ = writeln!(out, "  {k}");
                }
                Ok(out)
            }
            Verb::PrefetchConfig {
                top,
                confidence,
                enable,
                rate,
            } => {
                let mut changes = serde_json::Map::new();
                if let Some(t) = top {
                    changes.insert("top_n".into(), json!(t));
                }
                if let Some(c) = confidence {
                    let v = match c.parse::<f64>() {
                        Ok(f) => json!(f),
                        Err(_) => json!(c),
                    };
                    changes.insert("min_confidence".into(), v);
                }
                if let Some(e) = enable {
                    changes.insert("enabled".into(), json!(e));
                }
                if let Some(r) = rate {
                    changes.insert("rate".into(), json!(r));
                }
                let cfg = match changes.is_empty() {
                    true => api.get("/api/v1/prefetch/config").await?,
                    false => {
                        api.post("/api/v1/prefetch/config", &J::Object(changes))
                            .await?
                    }
                };
                Ok(if as_json {
                    pretty(&cfg)
                } else {
                    config_text(&cfg)
                })
            }
            Verb::Jobs { run } => {
                if let Some(id) = run {
                    let r = api
                        .post(&format!("/api/v1/jobs/{}/run", encode(id)), &json!({}))
                        .await?;
                    return Ok(if as_json {
                        pretty(&r)
                    } else {
                        format!("started {id}\n")
                    });
                }
                let j = api.get("/api/v1/jobs").await?;
                Ok(if as_json { pretty(&j) } else { jobs_text(&j) })
            }
        }
    })
}

struct Api {
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn get(&self, path: &str) -> Result<J, String> {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: &J) -> Result<J, String> {
        self.call("POST", path, Some(body.to_string())).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<J, String> {
        let url = format!("{}{path}", self.base);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("bad URL {url}: {e}"))?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("cannot reach prescient at {}: {e}", self.base))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), 64 << 20)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            let j: J = serde_json::from_slice(&body).map_err(|_| {
                format!(
                    "{url} answered {status} with something that is not JSON: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )
            })?;
            if !status.is_success() {
                let why = j["error"].as_str().unwrap_or("no reason given");
                return Err(format!("{method} {path}: {status}: {why}"));
            }
            Ok(j)
        };
        tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .map_err(|_| format!("{url}: no answer within 30 s"))?
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, crate::origin::client::COMPONENT).to_string()
}

fn pretty(j: &J) -> String {
    serde_json::to_string_pretty(j).unwrap_or_default() + "\n"
}

/// A count with thousands separators.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes_human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn duration_human(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn rows(out: &mut String, rows: &[(&str, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<w$}  {v}");
    }
}

fn status_text(st: &J, preds: &[(String, J, J)]) -> String {
    let mut out = format!(
        "prescient {}, up {}\n",
        st["version"].as_str().unwrap_or("?"),
        duration_human(st["uptime_seconds"].as_u64().unwrap_or(0))
    );
    let up = &st["upstream"];
    let hit = match st["hit_rate"].as_f64() {
        Some(r) => format!(
            "{:.1}% ({} hits, {} misses)",
            r * 100.0,
            grouped(st["keyspace_hits"].as_u64().unwrap_or(0)),
            grouped(st["keyspace_misses"].as_u64().unwrap_or(0))
        ),
        None => "- (no reads yet)".into(),
    };
    let prefetch = match (
        st["prefetch"]["configured"].as_bool(),
        st["prefetch"]["enabled"].as_bool(),
    ) {
        (Some(false), _) => "not configured (needs origin routes and tracking)".to_string(),
        (_, Some(true)) => "enabled".to_string(),
        _ => "disabled".to_string(),
    };
    let mut r = vec![
        (
            "upstream",
            format!(
                "{} ({}{})",
                up["url"].as_str().unwrap_or("?"),
                up["state"].as_str().unwrap_or("?"),
                match (up["url"].as_str(), up["version"].as_str()) {
                    (Some("memory://"), _) => ", the embedded store".to_string(),
                    (_, Some(v)) if !v.is_empty() => format!(", Redis {v}"),
                    _ => String::new(),
                }
            ),
        ),
        ("hit rate", hit),
        (
            "memory",
            format!(
                "{}, {} keys",
                bytes_human(st["memory_used_bytes"].as_u64().unwrap_or(0)),
                grouped(st["keys"].as_u64().unwrap_or(0))
            ),
        ),
        ("prefetch", prefetch),
        (
            "learning",
            format!(
                "{} ({} queries tracked)",
                st["learning"]["state"].as_str().unwrap_or("?"),
                grouped(st["learning"]["queries_tracked"].as_u64().unwrap_or(0))
            ),
        ),
    ];
    if let Some(routes) = st["origin"]["routes"].as_array() {
        let names: Vec<&str> = routes.iter().filter_map(J::as_str).collect();
        r.push(("origin", names.join(", ")));
    }
    if let Some(g) = st["jobs"]["ready_gate"].as_str() {
        r.push(("ready", format!("no: {g}")));
    }
    rows(&mut out, &r);
    if !preds.is_empty() {
        out.push_str("\nTop predictions (hot key -> likely next, probability):\n");
        for (key, reads, p) in preds {
            let next: Vec<String> = p["predictions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            format!(
                                "{} ({:.2})",
                                x["key"].as_str().unwrap_or("?"),
                                x["probability"].as_f64().unwrap_or(0.0)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {key} [{} reads] -> {}",
                reads,
                if next.is_empty() {
                    "nothing learned yet".to_string()
                } else {
                    next.join(", ")
                }
            );
        }
    }
    out
}

fn scalar_text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Null => "-".into(),
        other => other.to_string(),
    }
}

fn section(out: &mut String, title: &str, obj: &J, keys: Option<&[&str]>) {
    let Some(m) = obj.as_object() else { return };
    let _ = writeln!(out, "{title}:");
    let pick: Vec<(&str, String)> = match keys {
        Some(ks) => ks
            .iter()
            .filter_map(|k| m.get(*k).map(|v| (*k, scalar_text(v))))
            .collect(),
        None => m
            .iter()
            .map(|(k, v)| (k.as_str(), scalar_text(v)))
            .collect(),
    };
    rows(out, &pick);
}

fn stats_text(s: &J) -> String {
    let mut out = String::new();
    section(
        &mut out,
        "Proxy",
        &s["proxy"],
        Some(&[
            "uptime_seconds",
            "commands_processed",
            "clients_connected",
            "upstream_state",
            "compression_bytes_saved",
            "compression_ratio",
        ]),
    );
    section(&mut out, "Cache", &s["cache"], None);
    if !s["prefetch"].is_null() {
        section(
            &mut out,
            "Prefetch",
            &s["prefetch"],
            Some(&[
                "enabled",
                "issued",
                "useful",
                "late",
                "wasted_evicted",
                "wasted_expired",
                "wasted_overwritten",
                "wasted_unused",
                "precision",
                "coverage",
                "threshold",
                "threshold_mode",
                "queue_size",
                "load_factor",
            ]),
        );
    }
    section(
        &mut out,
        "Tracking",
        &s["tracking"],
        Some(&[
            "reads",
            "learned",
            "dropped",
            "shed",
            "states",
            "top1_accuracy",
            "topk_accuracy",
            "model_bytes",
        ]),
    );
    if let Some(o) = s["origin"].as_array() {
        let _ = writeln!(out, "Origin:");
        for l in o.iter().filter_map(J::as_str) {
            let _ = writeln!(out, "  {l}");
        }
    }
    out.push_str(&jobs_text(&s["jobs"]));
    out
}

fn config_text(c: &J) -> String {
    let mut out = String::from("Prefetch settings:\n");
    let keys = [
        "enabled",
        "min_confidence",
        "top_n",
        "rate",
        "workers",
        "max_load_factor",
        "touch_probability",
        "cache_space_threshold",
        "queue_max_size",
        "max_age_ms",
        "hour_weights",
        "hour_weights_utc",
    ];
    let r: Vec<(&str, String)> = keys
        .iter()
        .filter_map(|k| c.get(*k).map(|v| (*k, scalar_text(v))))
        .collect();
    rows(&mut out, &r);
    out
}

fn jobs_text(j: &J) -> String {
    let Some(jobs) = j["jobs"].as_array() else {
        return String::new();
    };
    let mut out = format!(
        "Jobs (instance {}, {}):\n",
        j["instance"].as_str().unwrap_or("?"),
        if j["leader"].as_bool() == Some(true) {
            "leader"
        } else {
            "not leader"
        }
    );
    if jobs.is_empty() {
        out.push_str("  none configured\n");
        return out;
    }
    let table: Vec<[String; 6]> = jobs
        .iter()
        .map(|x| {
            [
                scalar_text(&x["id"]),
                scalar_text(&x["runs"]),
                scalar_text(&x["failures"]),
                scalar_text(&x["last_run"]),
                scalar_text(&x["next_run"]),
                scalar_text(&x["last_outcome"]),
            ]
        })
        .collect();
    let head = [
        "job",
        "runs",
        "failures",
        "last run",
        "next run",
        "last outcome",
    ];
    let mut w = head.map(str::len);
    for row in &table {
        for (i, c) in row.iter().enumerate().take(5) {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: [&str; 6]| {
        format!(
            "  {:<a$}  {:>b$}  {:>c$}  {:<d$}  {:<e$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3],
            e = w[4]
        )
    };
    out.push_str(&line(head));
    for row in &table {
        out.push_str(&line([
            &row[0], &row[1], &row[2], &row[3], &row[4], &row[5],
        ]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(12), "12");
        assert_eq!(bytes_human(512), "512 B");
        assert_eq!(bytes_human(3 << 20), "3.0 MiB");
        assert_eq!(duration_human(3725), "1h 2m");
    }
}
