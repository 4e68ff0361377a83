//! The receiver endpoint over real HTTP: the GitHub example of docs/api.md, dedupe
//! (sequential and 50-way concurrent), limits, and every kind of bad input.

use std::time::Duration;

use hookgate::sandbox::memory::Call;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn github_example_end_to_end() {
    let t = TestHost::start().await;
    let id = t.create(github_receiver()).await;
    let (status, body) = t
        .github(
            &id,
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            &pr("opened", 42),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["status"], "accepted");
    let delivery = body["data"]["delivery_id"].as_str().unwrap().to_owned();
    let d = t.settled(&delivery).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["sandbox"], "pr-42");
    let explain = d["explain"].as_str().unwrap();
    assert!(explain.contains("[pass] sandbox pr-42"), "{explain}");
    assert!(
        explain.contains("action 1 of 2 (ensure_sandbox, rule 1): attempt 1, "),
        "{explain}"
    );
    assert!(
        explain.contains(
            "sandbox pr-42 created\n[pass] action 2 of 2 (deliver_to_port, rule 1): attempt 1, "
        ),
        "{explain}"
    );
    assert!(
        explain.trim_end().ends_with("port 3000 answered 200"),
        "{explain}"
    );
    // The request is kept whole; credential headers are redacted in the view.
    assert_eq!(
        d["request"]["body"]["data"],
        serde_json::to_string(&pr("opened", 42)).unwrap()
    );
    let sig = d["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-hub-signature-256")
        .unwrap();
    assert_eq!(sig[1], "<redacted>");
    let calls = t.plane().calls();
    assert_eq!(calls[0], Call::Ensure("pr-42".into()));
    let Call::Deliver {
        sandbox,
        port,
        delivery_id,
        body,
    } = &calls[1]
    else {
        panic!("{calls:?}")
    };
    assert_eq!((sandbox.as_str(), *port), ("pr-42", 3000));
    assert_eq!(delivery_id.as_deref(), Some(delivery.as_str()));
    assert_eq!(body, &serde_json::to_vec(&pr("opened", 42)).unwrap());

    // synchronize matches no rule: stored, explained, nothing run.
    let (_, b) = t.github(&id, "d-sync", &pr("synchronize", 42)).await;
    let d = t.settled(b["data"]["delivery_id"].as_str().unwrap()).await;
    assert_eq!(d["status"], "no_match");
    assert!(
        d["explain"]
            .as_str()
            .unwrap()
            .contains("rule 2 skipped: $.action was \"synchronize\", wanted \"closed\"")
    );

    // closed deletes the sandbox.
    let (_, b) = t.github(&id, "d-close", &pr("closed", 42)).await;
    t.settled(b["data"]["delivery_id"].as_str().unwrap()).await;
    assert_eq!(
        t.plane().calls().last(),
        Some(&Call::Delete("pr-42".into()))
    );
}

#[tokio::test]
async fn duplicates_get_the_original_delivery_id() {
    let t = TestHost::start().await;
    let id = t.create(github_receiver()).await;
    let (s1, first) = t.github(&id, "same", &pr("opened", 1)).await;
    let (s2, second) = t.github(&id, "same", &pr("opened", 1)).await;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(second["data"]["status"], "duplicate");
    assert_eq!(second["data"]["delivery_id"], first["data"]["delivery_id"]);
    t.settled(first["data"]["delivery_id"].as_str().unwrap())
        .await;
    let runs = t
        .plane()
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Deliver { .. }))
        .count();
    assert_eq!(runs, 1);
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_one_delivery_and_one_run() {
    let t = std::sync::Arc::new(TestHost::start().await);
    let id = t.create(github_receiver()).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let t = t.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            t.github(&id, "burst", &pr("opened", 9)).await
        }));
    }
    let mut accepted = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert!(status == 202 || status == 200, "{status} {body}");
        if status == 202 {
            accepted.push(body.clone());
        } else {
            assert_eq!(body["data"]["status"], "duplicate");
        }
        ids.insert(body["data"]["delivery_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(accepted.len(), 1, "exactly one 202");
    assert_eq!(ids.len(), 1, "every answer names the same delivery");
    let delivery = ids.into_iter().next().unwrap();
    t.settled(&delivery).await;
    assert_eq!(t.stored(&id).await, 1);
    let runs = t
        .plane()
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Deliver { .. }))
        .count();
    assert_eq!(runs, 1);
}

async fn post(t: &TestHost, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = t.client.post(t.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    crate::support::answer(resp).await
}

#[tokio::test]
async fn bad_input_gets_a_precise_answer_and_stores_nothing() {
    let t = TestHost::start_with(&[
        ("HOOKGATE_LIMITS_MAX_HEADERS", "20"),
        ("HOOKGATE_LIMITS_MAX_URL_BYTES", "200"),
    ])
    .await;
    let id = t.create(github_receiver()).await;
    let path = format!("/hooks/{id}");

    // Unknown receiver.
    assert_eq!(
        post(&t, "/hooks/rcv_unknown", &[], b"{}".to_vec()).await.0,
        404
    );
    // Unsigned, badly signed, signed for other bytes.
    let (s, b) = post(&t, &path, &[("X-GitHub-Delivery", "x")], b"{}".to_vec()).await;
    // The sender learns which kind of check failed; the operator, all of it.
    assert_eq!(
        (s, b["error"].as_str()),
        (
            401,
            Some("authentication failed: a required credential is missing")
        )
    );
    let r = t
        .rejected_because(&id, "signature header X-Hub-Signature-256 missing")
        .await;
    assert_eq!(
        (r["status"].as_u64(), r["failed"].as_str()),
        (Some(401), Some("auth:missing"))
    );
    let (s, b) = post(
        &t,
        &path,
        &[("X-Hub-Signature-256", "sha256=zz")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (401, Some("signature_rejected")));
    let (s, _) = post(
        &t,
        &path,
        &[("X-Hub-Signature-256", &github_signature(b"{}"))],
        b"{} ".to_vec(),
    )
    .await;
    assert_eq!(s, 401);
    // Not JSON, and not UTF-8: authentic, but the target cannot be read from it.
    for body in [b"action=opened".to_vec(), vec![0xff, 0xfe, 0x00, 0x01]] {
        let sig = github_signature(&body);
        let (s, b) = post(
            &t,
            &path,
            &[("X-Hub-Signature-256", &sig), ("X-GitHub-Delivery", "nj")],
            body,
        )
        .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (422, Some("target_rejected")),
            "{b}"
        );
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("the body is not JSON"),
            "{b}"
        );
    }
    // A hostile sandbox name.
    let hostile = json!({"action": "opened", "pull_request": {"number": "../../etc/passwd"}});
    let (s, b) = t.github(&id, "h", &hostile).await;
    assert_eq!((s, b["code"].as_str()), (422, Some("target_rejected")));
    // Over the body limit, announced and not announced.
    let big = vec![b'x'; (1 << 20) + 1];
    let (s, b) = post(
        &t,
        &path,
        &[("X-Hub-Signature-256", "sha256=00")],
        big.clone(),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (413, Some("payload_too_large")));
    let answer = chunked(t.host.addr, &path, 2 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // URL and header caps.
    let long = format!("{path}?{}", "q".repeat(300));
    assert_eq!(post(&t, &long, &[], b"{}".to_vec()).await.0, 414);
    let mut req = t.client.post(t.url(&path));
    for i in 0..30 {
        req = req.header(format!("x-extra-{i}"), "v");
    }
    assert_eq!(req.body("{}").send().await.unwrap().status().as_u16(), 431);

    assert_eq!(t.stored(&id).await, 0, "nothing was stored");
}

/// Sends a chunked body of `total` bytes with no Content-Length; returns the answer.
async fn chunked(addr: std::net::SocketAddr, path: &str, total: usize) -> String {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Hub-Signature-256: sha256=00\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        // The server may answer and close before the body ends; that is the point.
        if sock.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn per_receiver_body_limit_applies() {
    let t = TestHost::start().await;
    let mut r = github_receiver();
    r["max_body_bytes"] = json!(64);
    let id = t.create(r).await;
    let (s, _) = t.github(&id, "small", &pr("opened", 1)).await;
    assert_eq!(s, 202);
    let big = json!({"action": "opened", "pull_request": {"number": 1}, "pad": "x".repeat(100)});
    let (s, b) = t.github(&id, "big", &big).await;
    assert_eq!(s, 413, "{b}");
    assert!(b["error"].as_str().unwrap().contains("64-byte limit"));
}

/// A client that sends headers and then trickles its body is cut off.
#[tokio::test]
async fn slow_clients_are_cut_off() {
    let t = TestHost::start_with(&[("HOOKGATE_LIMITS_BODY_TIMEOUT_SECONDS", "1")]).await;
    let id = t.create(github_receiver()).await;
    let mut sock = tokio::net::TcpStream::connect(t.host.addr).await.unwrap();
    let head = format!(
        "POST /hooks/{id} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Hub-Signature-256: sha256=00\r\n\r\n{{"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server never answered");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // Headers that never finish are cut off too.
    let mut sock = tokio::net::TcpStream::connect(t.host.addr).await.unwrap();
    sock.write_all(b"POST /hooks/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a half-sent request held the connection open");
}

#[tokio::test]
async fn handshakes_are_answered_not_stored() {
    let t = TestHost::start().await;
    let id = t
        .create(json!({
            "name": "slack",
            "auth": {"auth_type": "provider", "provider": "slack", "secret": {"name": "slack", "value": "slack-secret"}},
            "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "bot"},
            "rules": [{"actions": [{"action_type": "deliver_to_port", "port": 3000}]}]
        }))
        .await;
    let body = br#"{"token":"t","challenge":"c-123","type":"url_verification"}"#;
    let ts = (hookgate::ids::now_millis() / 1000).to_string();
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(b"slack-secret").unwrap();
    hmac::Mac::update(&mut mac, format!("v0:{ts}:").as_bytes());
    hmac::Mac::update(&mut mac, body);
    let sig: String = hmac::Mac::finalize(mac)
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let resp = t
        .client
        .post(t.url(&format!("/hooks/{id}")))
        .header("X-Slack-Request-Timestamp", &ts)
        .header("X-Slack-Signature", format!("v0={sig}"))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "c-123");
    assert_eq!(t.stored(&id).await, 0);
}

#[tokio::test]
async fn health_and_metrics() {
    let t = TestHost::start().await;
    let id = t.create(github_receiver()).await;
    t.github(&id, "m-1", &pr("opened", 3)).await;
    t.github(&id, "m-1", &pr("opened", 3)).await;
    let resp = t
        .client
        .post(t.url(&format!("/hooks/{id}")))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        t.client
            .get(t.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    let metrics = t.metrics().await;
    for needle in [
        format!("hookgate_requests_total{{receiver=\"{id}\",outcome=\"accepted\"}}"),
        format!("hookgate_requests_total{{receiver=\"{id}\",outcome=\"duplicate\"}}"),
        format!("hookgate_verify_failures_total{{receiver=\"{id}\",reason=\"missing\"}}"),
        format!("hookgate_dedupe_hits_total{{receiver=\"{id}\"}}"),
        "hookgate_queue_depth".to_owned(),
        "hookgate_commit_batch_size".to_owned(),
    ] {
        assert!(metrics.contains(&needle), "missing {needle} in\n{metrics}");
    }
}

/// Clients that go away mid-body or right after sending, while their delivery
/// is being committed (hyper then drops the handler). Afterwards every key has
/// exactly one delivery, each ran exactly once, none is left pending, and every
/// resend is a duplicate of it.
#[tokio::test]
async fn clients_that_vanish_mid_request_leave_no_orphan_and_no_twin() {
    let t = TestHost::start().await;
    let id = t.create(github_receiver()).await;
    let body = |n: usize| serde_json::to_vec(&pr("opened", 42 + (n % 3) as u64)).unwrap();
    let raw = |n: usize| {
        let bytes = body(n);
        let head = format!(
            "POST /hooks/{id} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-GitHub-Delivery: gone-{n}\r\nX-Hub-Signature-256: {}\r\nContent-Length: {}\r\n\r\n",
            github_signature(&bytes),
            bytes.len()
        );
        (head.into_bytes(), bytes)
    };
    let addr = t.host.addr;
    let mut clients = Vec::new();
    for n in 0..120 {
        let (head, bytes) = raw(n);
        clients.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(&head).await.unwrap();
            if n % 4 == 0 {
                // Mid-body: half of it, then gone.
                let _ = s.write_all(&bytes[..bytes.len() / 2]).await;
            } else {
                // All of it, then gone before the answer (a reset, not a close).
                let _ = s.write_all(&bytes).await;
                tokio::time::sleep(Duration::from_micros((n % 7) as u64 * 300)).await;
                let _ = s.set_zero_linger();
            }
            drop(s);
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    // Every key once more, properly: taken now, or a duplicate of the delivery
    // an earlier client left behind; and then once again, always a duplicate.
    let mut first = Vec::new();
    for n in 0..120 {
        let (status, answer) = t.github_raw(&id, &format!("gone-{n}"), body(n)).await;
        assert!(status == 202 || status == 200, "{answer}");
        first.push(answer["data"]["delivery_id"].as_str().unwrap().to_owned());
    }
    for (n, delivery) in first.iter().enumerate() {
        let (status, answer) = t.github_raw(&id, &format!("gone-{n}"), body(n)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["status"], "duplicate");
        assert_eq!(
            answer["data"]["delivery_id"].as_str(),
            Some(delivery.as_str())
        );
    }
    assert_eq!(t.stored(&id).await, 120, "one delivery per key");
    for delivery in &first {
        let d = t.settled(delivery).await;
        assert_eq!(d["status"], "succeeded", "{d}");
    }
    let calls = t.plane().calls();
    for delivery in &first {
        let runs = calls
            .iter()
            .filter(|c| matches!(c, Call::Deliver { delivery_id: Some(d), .. } if d == delivery))
            .count();
        assert_eq!(runs, 1, "{delivery} ran {runs} times");
    }
}
