//! The management API: envelope, admin token, receivers' lifecycle, deliveries,
//! replay, pagination and the errors a client can make.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn admin_token_is_required_and_checked() {
    let t = TestHost::start().await;
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic Zm9vOmJhcg=="),
        Some(t.host.admin_token.as_str()),
    ] {
        let mut req = t.client.get(t.url("/v1/webhooks/incoming"));
        if let Some(a) = auth {
            req = req.header(
                "Authorization",
                if a.starts_with("hg_") {
                    format!("Bearer {a}")
                } else {
                    a.to_owned()
                },
            );
        }
        let resp = req.send().await.unwrap();
        let expect = if auth.is_some_and(|a| a.starts_with("hg_")) {
            200
        } else {
            401
        };
        assert_eq!(resp.status().as_u16(), expect, "{auth:?}");
        let body: Value = resp.json().await.unwrap();
        if expect == 401 {
            assert_eq!(body["success"], false);
            assert_eq!(body["code"], "unauthorized");
            assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        }
    }
    // The token file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(hookgate::token_path(t.dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn receiver_lifecycle_hides_secrets_and_keeps_history() {
    let t = TestHost::start().await;
    let (status, created) = t
        .api(
            Method::POST,
            "/v1/webhooks/incoming",
            Some(github_receiver()),
        )
        .await;
    assert_eq!(status, 201);
    let data = &created["data"];
    let id = data["id"].as_str().unwrap();
    assert_eq!(
        data["receiver_url"],
        format!("http://{}/hooks/{id}", t.host.addr)
    );
    assert_eq!(
        data["auth"]["secret"],
        json!({"secret_ref": "github_webhook_secret"})
    );
    assert!(!created.to_string().contains(GITHUB_SECRET));

    let (status, got) = t
        .api(Method::GET, &format!("/v1/webhooks/incoming/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert!(!got.to_string().contains(GITHUB_SECRET));

    // Update without resending the secret: refer to it.
    let (status, updated) = t
        .api(
            Method::PUT,
            &format!("/v1/webhooks/incoming/{id}"),
            Some(json!({
                "status": "disabled",
                "auth": got["data"]["auth"].clone(),
            })),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["data"]["status"], "disabled");

    // Disabled: 404 at its URL.
    let (status, body) = t.github(id, "d-1", &pr("opened", 1)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    // Enabled again, a delivery lands; then deleted, the URL is gone, history stays.
    let (status, _) = t
        .api(
            Method::PUT,
            &format!("/v1/webhooks/incoming/{id}"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, accepted) = t.github(id, "d-2", &pr("opened", 1)).await;
    assert_eq!(status, 202, "{accepted}");
    let (status, _) = t
        .api(Method::DELETE, &format!("/v1/webhooks/incoming/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(t.github(id, "d-3", &pr("opened", 1)).await.0, 404);
    assert_eq!(
        t.api(Method::GET, &format!("/v1/webhooks/incoming/{id}"), None)
            .await
            .0,
        404
    );
    let (status, history) = t
        .api(
            Method::GET,
            &format!("/v1/webhooks/incoming/{id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        history["data"]["deliveries"][0]["id"],
        accepted["data"]["delivery_id"]
    );
}

#[tokio::test]
async fn bad_requests_are_precise() {
    let t = TestHost::start().await;
    // Not JSON.
    let resp = t
        .client
        .post(t.url("/v1/webhooks/incoming"))
        .bearer_auth(&t.host.admin_token)
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("request body is not valid JSON"),
        "{body}"
    );

    // Config errors name the field.
    let mut bad = github_receiver();
    bad["rules"][1]["actions"][0] = json!({"action_type": "deliver_to_port", "port": 70000});
    let (status, body) = t
        .api(Method::POST, "/v1/webhooks/incoming", Some(bad))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["code"], "invalid_config");
    assert_eq!(
        body["error"],
        "rules[1].actions[0].port: expected an integer 1..65535, found 70000"
    );

    // A plugin that is not installed.
    let mut plugged = github_receiver();
    plugged["auth"] = json!({"auth_type": "plugin", "plugin": "discord-ed25519"});
    let (status, body) = t
        .api(Method::POST, "/v1/webhooks/incoming", Some(plugged))
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"discord-ed25519\" is not installed"),
        "{body}"
    );

    // Pagination bounds and filters.
    let (status, body) = t
        .api(Method::GET, "/v1/webhooks/incoming?limit=0", None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("limit: expected an integer 1..100, found \"0\""))
    );
    let id = t.create(github_receiver()).await;
    let (status, body) = t
        .api(
            Method::GET,
            &format!("/v1/webhooks/incoming/{id}/deliveries?status=done"),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        t.api(Method::GET, "/v1/deliveries/dlv_nope", None).await.0,
        404
    );
    let (status, body) = t
        .api(Method::POST, "/v1/deliveries/dlv_nope/replay", None)
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(t.api(Method::GET, "/v1/nothing", None).await.0, 404);
}

#[tokio::test]
async fn listing_paginates_newest_first() {
    let t = TestHost::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = github_receiver();
        r["name"] = json!(format!("r{i}"));
        ids.push(t.create(r).await);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (_, page1) = t
        .api(Method::GET, "/v1/webhooks/incoming?page=1&limit=2", None)
        .await;
    let (_, page3) = t
        .api(Method::GET, "/v1/webhooks/incoming?page=3&limit=2", None)
        .await;
    assert_eq!(
        page1["data"]["pagination"],
        json!({"page": 1, "limit": 2, "total": 5, "pages": 3})
    );
    let names: Vec<&str> = page1["data"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["r4", "r3"]);
    assert_eq!(page3["data"]["webhooks"][0]["name"], "r0");

    let id = &ids[0];
    let mut deliveries = Vec::new();
    for i in 0..3 {
        let (_, b) = t.github(id, &format!("d-{i}"), &pr("opened", 7)).await;
        deliveries.push(b["data"]["delivery_id"].as_str().unwrap().to_owned());
    }
    let (_, h) = t
        .api(
            Method::GET,
            &format!("/v1/webhooks/incoming/{id}/deliveries?limit=2"),
            None,
        )
        .await;
    let got: Vec<&str> = h["data"]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![deliveries[2].as_str(), deliveries[1].as_str()]);
}

#[tokio::test]
async fn replay_runs_again_and_says_so() {
    let t = TestHost::start().await;
    let id = t.create(github_receiver()).await;
    let (_, b) = t.github(&id, "d-1", &pr("opened", 42)).await;
    let original = b["data"]["delivery_id"].as_str().unwrap().to_owned();
    t.settled(&original).await;
    let (status, r) = t
        .api(
            Method::POST,
            &format!("/v1/deliveries/{original}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["data"]["replay_of"], original.as_str());
    let replay = r["data"]["delivery_id"].as_str().unwrap();
    assert_ne!(replay, original);
    let d = t.settled(replay).await;
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["replay_of"], original.as_str());
    assert!(
        d["explain"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[info] replay of {original}")),
        "{}",
        d["explain"]
    );
    let delivered = t
        .plane()
        .calls()
        .iter()
        .filter(|c| matches!(c, hookgate::sandbox::memory::Call::Deliver { .. }))
        .count();
    assert_eq!(delivered, 2, "the replay delivered again, bypassing dedupe");
}
