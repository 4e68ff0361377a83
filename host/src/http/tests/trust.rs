//! Handler tests for the trust issue's findings, each a regression test that
//! failed on the code before its fix: acceptance that a vanished client cannot
//! cancel, purged and sealed secrets, a private data directory, short sender
//! reasons with full ones kept, redacted credentials, replay keys.

use super::*;

/// Regression (the trust issue): a request dropped while its delivery was being
/// committed (hyper drops the handler when the client goes away) left the row
/// `pending` and never run, and released its key, so a resend became a second
/// delivery. Acceptance is polled exactly once here, far enough to hand the row
/// to the commit, and then dropped.
#[tokio::test]
async fn acceptance_dropped_mid_commit_still_settles_and_runs() {
    use std::future::Future;
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let live = t.state.live(&id).unwrap();
    let incoming = || crate::accept::Incoming {
        receiver_id: id.clone(),
        received_at: crate::ids::now_millis(),
        request: crate::store::StoredRequest {
            verified_at: Some(1),
            method: "POST".into(),
            url: "http://h/hooks".into(),
            headers: Vec::new(),
            body: br#"{"action":"opened","pull_request":{"number":42}}"#.to_vec(),
            remote_addr: None,
            kept_credentials: Vec::new(),
        },
        key: Some(crate::accept::DedupeKey {
            hash: "k-dropped".into(),
            replay: None,
            expires_at: crate::ids::now_millis() + 60_000,
        }),
        target: crate::accept::Target::Sandbox(hookgate_core::SandboxName::parse("pr-42").unwrap()),
        plan: crate::accept::plan(&live, &[hookgate_core::rules::Matched(0)]),
        trace: Default::default(),
        replay_of: None,
        redact: Default::default(),
        keep: Vec::new(),
    };
    let mut dropped = Box::pin(crate::accept::accept(&t.state, incoming()));
    std::future::poll_fn(|cx| {
        assert!(
            dropped.as_mut().poll(cx).is_pending(),
            "the commit took no time"
        );
        std::task::Poll::Ready(())
    })
    .await;
    drop(dropped);
    // The key is settled by the commit it was handed to: a resend is a duplicate
    // of the one stored delivery, which runs.
    let again = crate::accept::accept(&t.state, incoming()).await.unwrap();
    let crate::accept::Accepted::Duplicate { delivery_id } = again else {
        panic!("a second delivery for one key: {again:?}");
    };
    let d = t.settled(&delivery_id).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let delivered = t
        .plane
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Deliver { .. }))
        .count();
    assert_eq!(delivered, 1);
}

/// Regression (the trust issue): a deleted receiver's secret values stayed in
/// the secrets table.
#[tokio::test]
async fn deleting_a_receiver_purges_its_secrets() {
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let stored = t.state.store.receiver(id.clone()).await.unwrap().unwrap();
    assert_eq!(stored.secrets.len(), 1);
    let (status, _) = t
        .admin("DELETE", &format!("/v1/webhooks/incoming/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let gone = t.state.store.receiver(id.clone()).await.unwrap().unwrap();
    assert!(gone.deleted_at.is_some());
    assert!(gone.secrets.is_empty(), "{:?}", gone.secrets);
    // Its history stays listed.
    let (status, _) = t
        .admin(
            "GET",
            &format!("/v1/webhooks/incoming/{id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Regression (the trust issue): the data directory was 0755 and the database
/// 0644, so any local user could read every secret in it.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_the_hookgate_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let settings = crate::settings::Settings::load(
        None,
        [("HOOKGATE_DATA_DIR".to_owned(), data.display().to_string())],
    )
    .unwrap();
    let plane = Arc::new(MemoryPlane::new());
    let Opened { state, .. } = crate::open(settings, Plane::Custom(plane.clone()))
        .await
        .unwrap();
    let t = T {
        state,
        plane,
        _dir: tmp,
    };
    t.state
        .store
        .put_receiver(crate::store::ReceiverRow {
            id: "rcv_1".into(),
            name: "r".into(),
            status: crate::store::ReceiverStatus::Active,
            config: json!({}),
            secrets: vec![("s".into(), "value".into())],
            created_at: 1,
            updated_at: 1,
            deleted_at: None,
        })
        .await
        .unwrap();
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    for file in [
        "hookgate.db",
        "hookgate.db-wal",
        "hookgate.db-shm",
        "admin-token",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}

/// Regression (the trust issue): a rejected sender was told which secret its
/// signature failed against ("… does not match secret github_webhook_secret");
/// the operator had only logs. The sender now learns the kind of check, and
/// the receiver's rejections keep the whole reason (the path, not the query).
#[tokio::test]
async fn the_sender_learns_the_kind_of_failure_and_the_operator_the_reason() {
    let t = host().await;
    let id = t.create(github_receiver()).await;
    let req = Request::post(format!("/hooks/{id}?token=s3cret-in-query"))
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = t.send(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"],
        "authentication failed: the signature or credential does not match"
    );
    assert!(
        !body.to_string().contains("github_webhook_secret"),
        "{body}"
    );
    let path = format!("/v1/webhooks/incoming/{id}/rejections");
    let mut list = Value::Null;
    for _ in 0..100 {
        list = t.admin("GET", &path, None).await.1["data"]["rejections"].clone();
        if list.as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = &list[0];
    assert_eq!(r["status"], 401, "{list}");
    assert_eq!(r["failed"], "auth:mismatch");
    assert_eq!(r["path"], format!("/hooks/{id}"));
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("github_webhook_secret"),
        "{r}"
    );
    assert!(!list.to_string().contains("s3cret-in-query"));
    let (status, _) = t
        .admin("GET", "/v1/webhooks/incoming/rcv_nope/rejections", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Regression (the trust issue): a `query_equals` token showed in
/// `GET /v1/deliveries/{id}` and in the envelope the sandbox got, and a
/// `header_equals` secret in a custom header reached both too. What the auth
/// tree reads as a credential is now redacted in what is stored, shown and
/// forwarded.
#[tokio::test]
async fn credentials_the_auth_tree_reads_are_not_kept_shown_or_forwarded() {
    let t = host().await;
    let secret = |v: &str| json!({"name": format!("ops_{}", v.len()), "value": v});
    let id = t
        .create(json!({
            "name": "ops",
            "auth": {"auth_type": "all", "verifiers": [
                {"auth_type": "header_equals", "name": "X-Ops-Code", "secret": secret("hunter2-header-code")},
                {"auth_type": "query_equals", "name": "token", "secret": secret("s3cret-query-token")}
            ]},
            "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "ops"},
            "rules": [{"actions": [
                {"action_type": "ensure_sandbox", "template": {"image": "echo"}},
                {"action_type": "deliver_to_port", "port": 3000, "payload": "envelope"}
            ]}]
        }))
        .await;
    let req = Request::post(format!("/hooks/{id}?token=s3cret-query-token&keep=1"))
        .header("x-ops-code", "hunter2-header-code")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = t.send(req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let delivery_id = body["data"]["delivery_id"].as_str().unwrap().to_owned();
    let shown = t.settled(&delivery_id).await;
    assert_eq!(shown["status"], "succeeded", "{shown}");
    let stored = t.state.store.delivery(delivery_id).await.unwrap().unwrap();
    let forwarded: Vec<String> = t
        .plane
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Deliver { body, .. } => Some(String::from_utf8_lossy(body).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded.len(), 1);
    for (what, text) in [
        ("shown", shown.to_string()),
        ("stored", format!("{:?}", stored.request)),
        ("forwarded", forwarded[0].clone()),
    ] {
        assert!(!text.contains("hunter2-header-code"), "{what}: {text}");
        assert!(!text.contains("s3cret-query-token"), "{what}: {text}");
    }
    assert!(
        shown["request"]["url"]
            .as_str()
            .unwrap()
            .ends_with("?token=<redacted>&keep=1")
    );
    assert!(
        forwarded[0].contains("token=<redacted>&keep=1"),
        "{}",
        forwarded[0]
    );
}

/// Regression (the trust issue): GitHub signs neither a timestamp nor the
/// delivery id, so a captured request sent again under a fresh
/// `X-GitHub-Delivery` ran again. The signed bytes are a second key now: the
/// replay is a duplicate of the first, also after a restart (the key is
/// stored), while another event is accepted.
#[tokio::test]
async fn a_captured_github_request_replayed_under_a_fresh_id_is_a_duplicate() {
    let t = host().await;
    let mut receiver = github_receiver();
    receiver["auth"] = json!({"auth_type": "provider", "provider": "github",
        "secret": {"name": "github_webhook_secret", "value": SECRET}});
    receiver.as_object_mut().unwrap().remove("idempotency");
    let id = t.create(receiver).await;
    let (status, first) = t.github(&id, "d-1", "opened").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let original = first["data"]["delivery_id"].clone();
    let (status, replayed) = t.github(&id, "d-forged-2", "opened").await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["data"]["status"], "duplicate");
    assert_eq!(replayed["data"]["delivery_id"], original);
    // Nor with the id stripped, nor with the signature's hex in upper case
    // (still valid): the key is what the signature covers, not its text.
    let body = json!({"action": "opened", "pull_request": {"number": 42}}).to_string();
    let sig = hex_hmac(SECRET, body.as_bytes());
    for (delivery, signature) in [
        (None, format!("sha256={sig}")),
        (Some("d-forged-3"), format!("sha256={}", sig.to_uppercase())),
    ] {
        let mut req = Request::post(format!("/hooks/{id}"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature);
        if let Some(d) = delivery {
            req = req.header("x-github-delivery", d);
        }
        let (status, answer) = t.send(req.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{delivery:?}: {answer}");
        assert_eq!(answer["data"]["delivery_id"], original, "{delivery:?}");
    }
    // The provider's own redelivery (same id) is a duplicate as before; another
    // event is new.
    assert_eq!(
        t.github(&id, "d-1", "opened").await.1["data"]["status"],
        "duplicate"
    );
    assert_eq!(t.github(&id, "d-3", "closed").await.0, StatusCode::ACCEPTED);
    // Both keys are stored with the delivery, so a restart keeps them.
    let reloaded = crate::dedupe::Dedupe::default();
    reloaded.load(
        t.state
            .store
            .live_keys(crate::ids::now_millis())
            .await
            .unwrap(),
    );
    let stored = t
        .state
        .store
        .delivery(original.as_str().unwrap().to_owned())
        .await
        .unwrap()
        .unwrap();
    let replay = stored.replay_key.expect("a replay key");
    assert!(matches!(
        reloaded.claim(&id, &replay, crate::ids::now_millis()),
        crate::dedupe::Claim::Duplicate(d) if d == original.as_str().unwrap()
    ));
}
