//! The jobs' HTTP client: a JSON POST with an `Idempotency-Key`, done when the answer is 2xx.
//! The count sink and the expiry webhook use it; both may receive a request twice (after a
//! crash between their answer and our bookkeeping) and must dedupe on the key.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Most of an answer's body read (and dropped).
const MAX_ANSWER: usize = 64 << 10;

pub struct Poster {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Poster {
    fn default() -> Self {
        Poster {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http(),
        }
    }
}

impl Poster {
    /// POSTs `body` (JSON) to `url`; Ok on a 2xx within `timeout`, else why not.
    pub async fn post(
        &self,
        url: &str,
        body: String,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let req = hyper::Request::post(uri)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = resp.status();
            // Read the answer so the connection can be reused; its content does not matter.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status {}", status.as_u16()))
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
        }
    }
}
