//! The Durable Object's dedupe record: a key seen within its retention window,
//! stored under `key:<hash>`. The inbox writes it when it accepts an event; the
//! alarm (`forward`) reads it to forget expired keys. Its own module, so neither
//! of those two has to import the other for it.

use serde::{Deserialize, Serialize};

/// A key seen in the retention window.
#[derive(Debug, Serialize, Deserialize)]
pub struct Seen {
    pub delivery_id: String,
    /// Unix ms.
    pub expires_at: u64,
}
