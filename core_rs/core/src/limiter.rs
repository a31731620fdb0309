//! Per-key token bucket with bounded memory. (Placeholder: the limiter work item replaces this.)

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
}

impl TokenBucket {
    /// # Errors
    /// When rate or burst is not a positive finite number.
    pub fn new(rate_per_s: f64, burst: f64, max_keys: Option<usize>) -> Result<Self, LimiterError> {
        let _ = max_keys;
        Ok(Self { rate_per_s, burst })
    }

    pub fn allow(&mut self, key: &str, now_ns: i64) -> bool {
        let _ = (key, now_ns, self.rate_per_s, self.burst);
        true
    }

    #[must_use]
    pub fn retry_after_s(&self, key: &str, now_ns: i64) -> f64 {
        let _ = (key, now_ns);
        0.0
    }

    #[must_use]
    pub fn len(&self) -> usize {
        0
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
