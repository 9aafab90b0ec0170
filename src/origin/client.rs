//! The HTTP client to the origin: hyper's pooled client (HTTP/1.1, keep-alive), a concurrency
//! cap per origin host, a timeout over the whole request, body included, and a body limit
//! enforced while it streams in (a huge or endless body is cut off, never buffered whole).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// What the origin answered.
#[derive(Debug)]
pub enum Fetched {
    Body(Bytes),
    NotFound,
}

pub struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Http {
    pub fn new(per_host: usize) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Http {
            client,
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn permits(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }

    /// GETs `url`: the body of a 2xx, NotFound for a 404, else an error saying what happened.
    /// Waiting for a slot under the host's cap counts against the timeout too.
    pub async fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Fetched, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let permits = self.permits(&host);
        let work = async {
            let _permit = permits.acquire().await.map_err(|e| e.to_string())?;
            let resp = self
                .client
                .get(uri)
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
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
        }
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
