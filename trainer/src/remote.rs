//! An external generator: text completions from an OpenAI-compatible server
//! (vLLM, SGLang, llama.cpp's `llama-server`, `transformers serve`), for
//! teams that already serve their models. The pipeline renders every prompt
//! itself (the model's chat template, the reverse template) and sends the
//! text to `POST {url}/v1/completions`, so what the server adds is only the
//! decoding: the same prompts, the same stop strings, the same greedy or
//! seeded sampling as the built-in generator.
//!
//! Plain HTTP only (no TLS in the build): the server is expected on the
//! local machine or network. Requests run `concurrency` at a time (servers
//! batch concurrent requests: that is where their speed comes from); each
//! one is retried with exponential back-off when the connection fails, times
//! out, or the server answers 429 or 5xx, and fails at once on any other
//! status with the server's own message. An unreachable server is an error
//! that names the URL and what was tried, never a hang.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Where and how to reach the server.
#[derive(Debug, Clone)]
pub struct RemoteParams {
    /// Base URL, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub url: String,
    /// The served model's name (`model` in the request); `None` leaves it
    /// out, which single-model servers such as llama.cpp's accept.
    pub model: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Tries per request (1: no retry).
    pub tries: usize,
    /// Limit for one request, connection included.
    pub timeout: Duration,
    /// The first back-off; doubled after each failed try.
    pub backoff: Duration,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
}

impl Default for RemoteParams {
    fn default() -> Self {
        RemoteParams {
            url: String::new(),
            model: None,
            concurrency: 8,
            tries: 4,
            timeout: Duration::from_secs(120),
            backoff: Duration::from_millis(500),
            api_key: std::env::var("MAIN_GENERATOR_API_KEY").ok(),
        }
    }
}

/// `[synthesis.generator]` of a pipeline config: the server that writes the
/// round's guesses and answers instead of the engine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// `http://HOST:PORT` of the OpenAI-compatible server.
    pub url: String,
    /// The served model that guesses instructions (plays the reverse
    /// model); unset: the server's only model.
    #[serde(default)]
    pub reverse_model: Option<String>,
    /// The served model that answers them for the agreement check (plays
    /// the forward model); unset: the server's only model.
    #[serde(default)]
    pub forward_model: Option<String>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_tries")]
    pub tries: usize,
    /// Seconds one request may take.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
}

fn default_concurrency() -> usize {
    RemoteParams::default().concurrency
}

fn default_tries() -> usize {
    RemoteParams::default().tries
}

fn default_timeout_s() -> f64 {
    RemoteParams::default().timeout.as_secs_f64()
}

impl GeneratorConfig {
    /// A config with `url` and the defaults (`--generator URL`).
    pub fn new(url: impl Into<String>) -> GeneratorConfig {
        GeneratorConfig {
            url: url.into(),
            reverse_model: None,
            forward_model: None,
            concurrency: default_concurrency(),
            tries: default_tries(),
            timeout_s: default_timeout_s(),
        }
    }

    /// The client that asks `model` (one of the two above).
    pub fn client(&self, model: Option<&str>) -> Result<RemoteGenerator> {
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(Error::invalid(
                "synthesis.generator.timeout_s",
                format!("{} (must be a positive number of seconds)", self.timeout_s),
            ));
        }
        RemoteGenerator::new(RemoteParams {
            url: self.url.clone(),
            model: model.map(str::to_owned),
            concurrency: self.concurrency,
            tries: self.tries,
            timeout: Duration::from_secs_f64(self.timeout_s),
            ..RemoteParams::default()
        })
    }
}

/// One completion to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The rendered prompt, sent as text.
    pub prompt: String,
    pub max_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    /// Nucleus sampling (1: off).
    pub top_p: f64,
    pub seed: u64,
    /// The completion ends before the first of these (not included).
    pub stop: Vec<String>,
}

/// A client of one OpenAI-compatible server.
pub struct RemoteGenerator {
    params: RemoteParams,
    endpoint: String,
    agent: ureq::Agent,
}

impl RemoteGenerator {
    pub fn new(params: RemoteParams) -> Result<RemoteGenerator> {
        let base = params.url.trim().trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        if base.starts_with("https://") {
            return Err(Error::invalid(
                "generator URL",
                format!("{}: https is not supported (this build has no TLS); reach the server over plain http, e.g. through an SSH tunnel", params.url),
            ));
        }
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(Error::invalid(
                "generator URL",
                format!("{:?}: expected http://HOST:PORT", params.url),
            ));
        }
        if params.concurrency == 0 || params.tries == 0 {
            return Err(Error::invalid(
                "generator",
                "concurrency and tries must be at least 1",
            ));
        }
        if params.timeout.is_zero() {
            return Err(Error::invalid("generator timeout", "must be positive"));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(params.timeout))
            .timeout_connect(Some(params.timeout.min(Duration::from_secs(10))))
            .http_status_as_error(false)
            .max_idle_connections_per_host(params.concurrency)
            .build()
            .into();
        Ok(RemoteGenerator {
            endpoint: format!("{base}/v1/completions"),
            params,
            agent,
        })
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Completes every request, `concurrency` at a time, and returns the
    /// texts in request order. The first request that fails for good stops
    /// the rest (those in flight finish) and is the error; `on_done` is
    /// called with the number completed so far, for progress.
    pub fn complete(
        &self,
        requests: &[CompletionRequest],
        on_done: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<String>> {
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Vec<Mutex<Option<Result<String>>>> =
            requests.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.params.concurrency.min(requests.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(req) = requests.get(i) else { break };
                    let r = self.complete_one(i, req);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    } else {
                        on_done(done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                });
            }
        });
        let mut out = Vec::with_capacity(requests.len());
        let mut first_error = None;
        for slot in results {
            match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(Ok(text)) => out.push(text),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                // Not started: a failure elsewhere stopped the run.
                None => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// One request with its retries.
    fn complete_one(&self, index: usize, req: &CompletionRequest) -> Result<String> {
        let body = self.body(req).to_string();
        let mut wait = self.params.backoff;
        let mut last = String::new();
        for attempt in 1..=self.params.tries {
            match self.post(&body) {
                Ok(Reply::Text(text)) => return Ok(text),
                Ok(Reply::Fatal(reason)) => return Err(self.error(index, reason)),
                Ok(Reply::Retry(reason)) | Err(reason) => last = reason,
            }
            if attempt < self.params.tries {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
        }
        Err(self.error(
            index,
            format!(
                "{last} (after {} tries; is the server running and serving this model?)",
                self.params.tries
            ),
        ))
    }

    fn body(&self, req: &CompletionRequest) -> Value {
        let mut body = json!({
            "prompt": req.prompt,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "n": 1,
            "stream": false,
        });
        if !req.stop.is_empty() {
            body["stop"] = json!(req.stop);
        }
        if let Some(m) = &self.params.model {
            body["model"] = json!(m);
        }
        body
    }

    /// One HTTP exchange: `Err` is a transport failure (retried).
    fn post(&self, body: &str) -> std::result::Result<Reply, String> {
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.params.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send(body).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| format!("reading the answer (HTTP {status}): {e}"))?;
        if status == 429 || status >= 500 {
            return Ok(Reply::Retry(format!("HTTP {status}: {}", clip(&text))));
        }
        if status != 200 {
            return Ok(Reply::Fatal(format!("HTTP {status}: {}", clip(&text))));
        }
        Ok(match completion_text(&text) {
            Ok(t) => Reply::Text(t),
            Err(reason) => Reply::Fatal(reason),
        })
    }

    fn error(&self, index: usize, reason: String) -> Error {
        Error::Generator {
            url: self.endpoint.clone(),
            request: index,
            reason,
        }
    }
}

enum Reply {
    Text(String),
    Retry(String),
    Fatal(String),
}

/// `choices[0].text` of a completions answer.
fn completion_text(answer: &str) -> std::result::Result<String, String> {
    let v: Value = serde_json::from_str(answer)
        .map_err(|e| format!("the answer is not JSON ({e}): {}", clip(answer)))?;
    v.get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("the answer has no choices[0].text: {}", clip(answer)))
}

/// A server's message, cut to a readable length.
fn clip(s: &str) -> String {
    const MAX: usize = 300;
    let s = s.trim();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        let with = |url: &str| {
            RemoteGenerator::new(RemoteParams {
                url: url.into(),
                ..RemoteParams::default()
            })
        };
        assert_eq!(
            with("http://127.0.0.1:8000/v1/").unwrap().endpoint(),
            "http://127.0.0.1:8000/v1/completions"
        );
        assert_eq!(
            with("http://h:1").unwrap().endpoint(),
            "http://h:1/v1/completions"
        );
        for bad in ["", "localhost:8000", "http://", "ftp://x"] {
            let e = with(bad).err().expect(bad).to_string();
            assert!(e.contains("http://HOST:PORT"), "{bad}: {e}");
        }
        let e = with("https://x").err().unwrap().to_string();
        assert!(e.contains("no TLS"), "{e}");
    }

    #[test]
    fn answers_are_read_or_named() {
        let ok = r#"{"choices":[{"text":" Paris.","index":0}]}"#;
        assert_eq!(completion_text(ok).unwrap(), " Paris.");
        assert!(completion_text("{}")
            .unwrap_err()
            .contains("choices[0].text"));
        assert!(completion_text("<html>").unwrap_err().contains("not JSON"));
        assert_eq!(clip(&"x".repeat(400)).chars().count(), 301);
    }

    /// A port nothing listens on: every try fails fast and the error says
    /// where and how often it tried.
    #[test]
    fn an_unreachable_server_is_a_clear_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let g = RemoteGenerator::new(RemoteParams {
            url: format!("http://127.0.0.1:{port}"),
            tries: 2,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            ..RemoteParams::default()
        })
        .unwrap();
        let req = CompletionRequest {
            prompt: "x".into(),
            max_tokens: 1,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: vec![],
        };
        let t = std::time::Instant::now();
        let e = g
            .complete(&[req.clone(), req], &|_| {})
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(e.contains("after 2 tries"), "{e}");
    }
}
