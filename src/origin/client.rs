//! The HTTP client to the origin: hyper's pooled client (HTTP/1.1, keep-alive), a concurrency
//! cap per origin host, a timeout over the whole request, body included, a body limit
//! enforced while it streams in (a huge or endless body is cut off, never buffered whole), and
//! a circuit breaker per host.
//!
//! The breaker opens after `breaker_failures` consecutive failures (no answer, a timeout, a
//! 5xx); while open, requests to the host fail at once. After `breaker_cooldown_ms` one request
//! goes through as a probe (half-open), the others still fail at once; its success closes the
//! breaker, its failure opens it for another cooldown. The probe has the request's timeout, and
//! a probe that ends any other way (its task dropped) counts as failed, so the breaker is never
//! stuck half-open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::Semaphore;

/// A URL placeholder's value is encoded as a path or query component: everything but
/// RFC 3986's unreserved characters.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The error of a background request skipped for want of a free slot.
pub const SKIPPED: &str = "skipped: the origin host is at max_concurrency";

/// What the origin answered.
#[derive(Debug)]
pub enum Fetched {
    Body(Bytes),
    NotFound,
}

pub struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
    per_host: usize,
    breaker: BreakerConfig,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures: u32,
    pub cooldown: Duration,
}

/// One origin host: its concurrency cap and its breaker.
pub struct Host {
    permits: Semaphore,
    state: Mutex<Breaker>,
}

/// A host's breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

impl Breaker {
    /// For the metric: 0 closed, 1 open, 2 half-open.
    pub fn code(self) -> i64 {
        match self {
            Breaker::Closed { .. } => 0,
            Breaker::Open { .. } => 1,
            Breaker::HalfOpen => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Breaker::Closed { .. } => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half-open",
        }
    }
}

/// What the breaker lets a request do.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Go,
    Probe,
    Refuse,
}

impl Host {
    fn state(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self, now: Instant) -> Admit {
        let mut s = self.state();
        match *s {
            Breaker::Closed { .. } => Admit::Go,
            Breaker::Open { until } if now >= until => {
                *s = Breaker::HalfOpen;
                Admit::Probe
            }
            Breaker::Open { .. } | Breaker::HalfOpen => Admit::Refuse,
        }
    }

    fn record(&self, ok: bool, probe: bool, cfg: BreakerConfig, now: Instant) {
        let mut s = self.state();
        *s = match (*s, ok) {
            (_, true) => Breaker::Closed { failures: 0 },
            (Breaker::Closed { failures }, false) if failures + 1 < cfg.failures && !probe => {
                Breaker::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => Breaker::Open {
                until: now + cfg.cooldown,
            },
        };
    }
}

/// Records a probe's outcome when it ends, however it ends: a probe dropped unanswered counts
/// as failed and re-opens the breaker.
struct ProbeGuard<'a> {
    host: &'a Host,
    cfg: BreakerConfig,
    probe: bool,
    outcome: Option<bool>,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        match self.outcome {
            Some(ok) => self.host.record(ok, self.probe, self.cfg, Instant::now()),
            None if self.probe => self.host.record(false, true, self.cfg, Instant::now()),
            None => {}
        }
    }
}

impl Http {
    pub fn new(per_host: usize, breaker: BreakerConfig) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Http {
            client,
            per_host: per_host.max(1),
            breaker,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn host(&self, host: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| {
                Arc::new(Host {
                    permits: Semaphore::new(self.per_host),
                    state: Mutex::new(Breaker::Closed { failures: 0 }),
                })
            })
            .clone()
    }

    /// Whether `host`'s breaker is open and still cooling down (a host never asked is not).
    pub fn is_open(&self, host: &str) -> bool {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.get(host).is_some_and(
            |h| matches!(*h.state(), Breaker::Open { until } if Instant::now() < until),
        )
    }

    /// Every host asked so far, with its breaker's state.
    pub fn breakers(&self) -> Vec<(String, Breaker)> {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = hosts.iter().map(|(h, s)| (h.clone(), *s.state())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// GETs `url`: the body of a 2xx, NotFound for a 404, else an error saying what happened.
    /// Waiting for a slot under the host's cap counts against the timeout too.
    /// A `background` request (a refresh of a value still being served) never waits for a
    /// slot under the host's cap: with none free it is skipped at once ([`SKIPPED`]), so
    /// demand misses are never queued behind refreshes, and it counts neither way for the
    /// breaker.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
        timeout: Duration,
        max_body: usize,
        background: bool,
    ) -> Result<Fetched, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let name = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let host = self.host(&name);
        let held = match background {
            true => match host.permits.try_acquire() {
                Ok(p) => Some(p),
                Err(_) => return Err(SKIPPED.into()),
            },
            false => None,
        };
        let probe = match host.admit(Instant::now()) {
            Admit::Refuse => return Err(format!("circuit breaker open for {name}")),
            Admit::Probe => true,
            Admit::Go => false,
        };
        let mut guard = ProbeGuard {
            host: &host,
            cfg: self.breaker,
            probe,
            outcome: None,
        };
        let work = async {
            let _permit = match held {
                Some(p) => p,
                None => host.permits.acquire().await.map_err(|e| e.to_string())?,
            };
            let resp = self
                .client
                .request({
                    let mut req = hyper::Request::get(uri);
                    for (k, v) in headers {
                        req = req.header(k, v);
                    }
                    req.body(Empty::new()).map_err(|e| e.to_string())?
                })
                .await
                .map_err(|e| format!("request failed: {}", chain(&e)))?;
            let status = resp.status();
            if status == hyper::StatusCode::NOT_FOUND {
                return Ok(Fetched::NotFound);
            }
            if !status.is_success() {
                return Err(format!("status {}", status.as_u16()));
            }
            let body = Limited::new(resp.into_body(), max_body)
                .collect()
                .await
                .map_err(
                    |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                        Some(_) => format!("body over max_body_bytes ({max_body})"),
                        None => format!("body failed: {e}"),
                    },
                )?;
            Ok(Fetched::Body(body.to_bytes()))
        };
        let r = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
        };
        // The host answered (a body, a 404, even one too large): healthy. No answer, a
        // timeout or a 5xx: a failure.
        let healthy = match &r {
            Ok(_) => true,
            Err(e) => e.starts_with("body over") || e.starts_with("status 4"),
        };
        guard.outcome = Some(healthy);
        r
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_probes_once_and_closes_or_reopens() {
        let cfg = BreakerConfig {
            failures: 3,
            cooldown: Duration::from_secs(5),
        };
        let h = Host {
            permits: Semaphore::new(1),
            state: Mutex::new(Breaker::Closed { failures: 0 }),
        };
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(h.admit(t0), Admit::Go);
            h.record(false, false, cfg, t0);
        }
        assert_eq!(*h.state(), Breaker::Closed { failures: 2 });
        h.record(false, false, cfg, t0);
        assert_eq!(h.admit(t0), Admit::Refuse, "open after 3 failures");
        let later = t0 + Duration::from_secs(6);
        assert_eq!(h.admit(later), Admit::Probe);
        assert_eq!(h.admit(later), Admit::Refuse, "one probe at a time");
        h.record(false, true, cfg, later);
        assert_eq!(h.admit(later), Admit::Refuse, "a failed probe reopens");
        let again = later + Duration::from_secs(6);
        assert_eq!(h.admit(again), Admit::Probe);
        h.record(true, true, cfg, again);
        assert_eq!(h.admit(again), Admit::Go, "a good probe closes");
        // A success resets the count.
        h.record(false, false, cfg, again);
        h.record(true, false, cfg, again);
        assert_eq!(*h.state(), Breaker::Closed { failures: 0 });
        // A probe dropped without an outcome counts as failed.
        let h2 = Host {
            permits: Semaphore::new(1),
            state: Mutex::new(Breaker::HalfOpen),
        };
        drop(ProbeGuard {
            host: &h2,
            cfg,
            probe: true,
            outcome: None,
        });
        assert!(matches!(*h2.state(), Breaker::Open { .. }));
    }
}
