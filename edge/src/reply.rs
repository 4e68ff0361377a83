//! The host's response envelope, produced at the edge too, so a provider or a
//! user sees the same shapes whichever side answered.

use serde::Serialize;
use serde_json::json;
use worker::Response;

/// RFC 3339, as the host writes it.
fn now() -> String {
    String::from(js_sys::Date::new_0().to_iso_string())
}

/// `{"success": true, "data": …, "timestamp": …}`.
pub fn ok<T: Serialize>(status: u16, data: T) -> worker::Result<Response> {
    Ok(
        Response::from_json(&json!({"success": true, "data": data, "timestamp": now()}))?
            .with_status(status),
    )
}

/// `{"success": false, "error": …, "code": …, "timestamp": …}`.
pub fn error(status: u16, code: &str, message: &str) -> worker::Result<Response> {
    Ok(Response::from_json(&json!({
        "success": false, "error": message, "code": code, "timestamp": now(),
    }))?
    .with_status(status))
}
