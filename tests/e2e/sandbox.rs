//! Sandboxes for real: the local plane's process groups and the echo server,
//! lifecycle timers, memory limits, restarts, and two hosts through the HTTP plane.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{TestHost, github_receiver, pr};

/// Polls `f` until it returns `Some`, or fails after `limit`.
async fn until<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sandbox(t: &TestHost, name: &str) -> (u16, Value) {
    let (status, body) = t
        .api(reqwest::Method::GET, &format!("/v1/sandboxes/{name}"), None)
        .await;
    (status, body["data"].clone())
}

async fn state_becomes(t: &TestHost, name: &str, want: &str, limit: Duration) -> Value {
    until(limit, &format!("sandbox {name} to be {want}"), || async {
        let (_, s) = sandbox(t, name).await;
        (s["state"] == want).then_some(s)
    })
    .await
}

fn header<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

fn body_of(record: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(record["body"].as_str().unwrap())
        .unwrap()
}

/// The process state letter from `/proc/<pid>/stat` (`T` when stopped), if alive.
fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

fn trace_text(d: &Value) -> String {
    d["trace"].to_string()
}

async fn send(t: &TestHost, receiver: &str, delivery: &str, body: Vec<u8>) -> Value {
    let (status, answer) = t.github_raw(receiver, delivery, body).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["data"]["delivery_id"].as_str().unwrap().to_owned();
    t.settled(&id).await
}

fn opened(number: u64) -> Vec<u8> {
    serde_json::to_vec(&pr("opened", number)).unwrap()
}

#[tokio::test]
async fn design_example_runs_on_local_sandboxes() {
    let t = TestHost::start_configured("", &[]).await;
    let receiver = t.create(github_receiver()).await;

    // Exact bytes: odd spacing and non-ASCII survive the forward untouched.
    let first = "{ \"action\" : \"opened\",\n  \"number\": 42, \"pull_request\": {\"number\": 42, \"title\": \"héllo ✓\"} }"
        .as_bytes()
        .to_vec();
    let d = send(&t, &receiver, "gh-1", first.clone()).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(trace_text(&d).contains("sandbox pr-42 created"), "{d}");

    let (status, s) = sandbox(&t, "pr-42").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["state"], "running");
    assert_eq!(s["image"], "ghcr.io/islo-labs/islo-runner:latest");
    assert!(
        s["pause_at"].is_string() && s["delete_at"].is_string(),
        "{s}"
    );
    let port = s["ports"]["3000"].as_u64().expect("port 3000 is mapped");
    let pid = s["pid"].as_u64().unwrap();
    let records = t.echo_records(port).await;
    assert_eq!(records.len(), 1);
    assert_eq!(body_of(&records[0]), first);
    assert_eq!(
        header(&records[0], "content-type"),
        Some("application/json")
    );
    assert_eq!(
        header(&records[0], "x-hookgate-delivery-id"),
        d["id"].as_str()
    );
    assert_eq!(header(&records[0], "x-hookgate-sandbox"), Some("pr-42"));
    assert_eq!(
        header(&records[0], "x-hub-signature-256"),
        None,
        "signatures are not leaked"
    );
    assert_eq!(header(&records[0], "x-github-delivery"), Some("gh-1"));

    // A second `opened` with a new delivery id: no second sandbox.
    let d = send(&t, &receiver, "gh-2", opened(42)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(
        trace_text(&d).contains("sandbox pr-42 already existed"),
        "{d}"
    );
    let (_, s) = sandbox(&t, "pr-42").await;
    assert_eq!(s["pid"].as_u64(), Some(pid), "the same process");
    let created = s["recent_actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "created")
        .count();
    assert_eq!(created, 1, "{s}");
    let (_, all) = t.api(reqwest::Method::GET, "/v1/sandboxes", None).await;
    assert_eq!(all["data"]["sandboxes"].as_array().unwrap().len(), 1);
    assert_eq!(t.echo_records(port).await.len(), 2);

    // Paused, the whole group stops; the next delivery wakes it (on_activity).
    let (status, paused) = t
        .api(reqwest::Method::POST, "/v1/sandboxes/pr-42/pause", None)
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["data"]["state"], "paused");
    assert_eq!(proc_state(pid), Some('T'));
    let d = send(&t, &receiver, "gh-3", opened(42)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(trace_text(&d).contains("was paused, resumed by"), "{d}");
    assert_ne!(proc_state(pid), Some('T'));
    assert_eq!(sandbox(&t, "pr-42").await.1["state"], "running");
    assert_eq!(t.echo_records(port).await.len(), 3);

    // `closed` deletes it: the process group is gone and so is its work dir.
    let closed = serde_json::to_vec(&pr("closed", 42)).unwrap();
    let d = send(&t, &receiver, "gh-4", closed).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let s = state_becomes(&t, "pr-42", "deleted", Duration::from_secs(5)).await;
    assert!(s.get("pid").is_none(), "{s}");
    until(
        Duration::from_secs(5),
        "the sandbox process to end",
        || async { proc_state(pid).is_none().then_some(()) },
    )
    .await;
    assert!(!t.dir.path().join("sandboxes/pr-42").exists());

    // Reopened: a new sandbox, created fresh.
    let d = send(&t, &receiver, "gh-5", opened(42)).await;
    assert!(trace_text(&d).contains("sandbox pr-42 created"), "{d}");
}

/// A receiver whose `opened` ensures a sandbox with `lifecycle` and delivers to it.
fn lifecycle_receiver(lifecycle: Value, deliver: Value) -> Value {
    let mut r = github_receiver();
    r["rules"] = json!([
        {"when": {"json_path": "$.action", "equals": "opened"},
         "actions": [
            {"action_type": "ensure_sandbox",
             "template": {"image": "echo", "lifecycle": lifecycle}},
            deliver]}
    ]);
    r
}

#[tokio::test]
async fn lifecycle_pauses_idle_sandboxes_and_deletes_old_ones() {
    if crate::support::skip_slow("lifecycle timers on real sandboxes") {
        return;
    }
    let t = TestHost::start_configured("", &[]).await;
    let receiver = t
        .create(lifecycle_receiver(
            json!({"pause_after_idle": 1, "delete_after": 5}),
            json!({"action_type": "deliver_to_port", "port": 3000}),
        ))
        .await;
    let d = send(&t, &receiver, "gh-1", opened(7)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let pid = sandbox(&t, "pr-7").await.1["pid"].as_u64().unwrap();

    let s = state_becomes(&t, "pr-7", "paused", Duration::from_secs(4)).await;
    assert_eq!(s["recent_actions"][0]["action"], "paused", "{s}");
    assert!(
        s["recent_actions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("lifecycle.pause_after_idle: no delivery for 1 s"),
        "{s}"
    );
    assert_eq!(proc_state(pid), Some('T'));

    // Without auto_resume, a delivery to a paused sandbox fails, clearly, once.
    let d = send(&t, &receiver, "gh-2", opened(7)).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = d["last_error"].as_str().unwrap();
    assert!(error.contains("sandbox pr-7 is paused"), "{error}");
    assert!(error.contains("not retried"), "{error}");

    let s = state_becomes(&t, "pr-7", "deleted", Duration::from_secs(8)).await;
    assert!(
        s["recent_actions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("lifecycle.delete_after: 5 s since creation"),
        "{s}"
    );
    assert!(!t.dir.path().join("sandboxes/pr-7").exists());
    until(
        Duration::from_secs(5),
        "the paused process to be killed",
        || async { proc_state(pid).is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn lifecycle_auto_resume_wakes_a_paused_sandbox_for_a_delivery() {
    let t = TestHost::start_configured("", &[]).await;
    // The deliver action itself does not ask for auto_resume: the lifecycle does.
    let receiver = t
        .create(lifecycle_receiver(
            json!({"pause_after_idle": 1, "auto_resume": "on_activity"}),
            json!({"action_type": "deliver_to_port", "port": 3000}),
        ))
        .await;
    send(&t, &receiver, "gh-1", opened(9)).await;
    state_becomes(&t, "pr-9", "paused", Duration::from_secs(4)).await;
    let d = send(&t, &receiver, "gh-2", opened(9)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(
        trace_text(&d).contains("was paused, resumed by lifecycle.auto_resume"),
        "{d}"
    );
    let (_, s) = sandbox(&t, "pr-9").await;
    let port = s["ports"]["3000"].as_u64().unwrap();
    assert_eq!(t.echo_records(port).await.len(), 2);
}

#[tokio::test]
async fn a_memory_hog_is_stopped_and_marked_failed() {
    // mawk doubles a string until the data-segment limit makes malloc fail.
    let config = r#"
[images.hog]
command = ["sh", "-c", "echo hog starting; exec awk 'BEGIN { s = \"xxxxxxxxxxxxxxxx\"; while (1) s = s s }'"]
"#;
    let t = TestHost::start_configured(config, &[]).await;
    let mut r = github_receiver();
    r["rules"] = json!([{"actions": [
        {"action_type": "ensure_sandbox", "template": {"image": "hog", "memory_mb": 64}}
    ]}]);
    let receiver = t.create(r).await;
    let d = send(&t, &receiver, "gh-1", opened(3)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let s = state_becomes(&t, "pr-3", "failed", Duration::from_secs(20)).await;
    let status = s["exit_status"].as_str().unwrap();
    assert!(status.contains("exit status: 2"), "{s}");
    let output = s["last_output"].as_str().unwrap();
    assert!(output.contains("hog starting"), "{s}");
    assert!(output.contains("out of memory"), "{s}");
    assert_eq!(s["recent_actions"][0]["action"], "failed", "{s}");
}

#[tokio::test]
async fn sandbox_state_and_timers_survive_a_host_restart() {
    if crate::support::skip_slow("lifecycle timers across a restart") {
        return;
    }
    let t = TestHost::start_configured("", &[]).await;
    let receiver = t
        .create(lifecycle_receiver(
            json!({"delete_after": 8}),
            json!({"action_type": "deliver_to_port", "port": 3000}),
        ))
        .await;
    send(&t, &receiver, "gh-1", opened(5)).await;
    send(&t, &receiver, "gh-2", opened(6)).await;
    let (_, five) = sandbox(&t, "pr-5").await;
    let (_, six) = sandbox(&t, "pr-6").await;
    let pid5 = five["pid"].as_u64().unwrap();
    let pid6 = six["pid"].as_u64().unwrap();

    // pr-5 keeps running through the restart; pr-6's process dies while the
    // host is down.
    let t = {
        let host = t;
        let stopped = host.restart_with(|| {
            nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(i32::try_from(pid6).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        });
        stopped.await
    };
    let (_, five) = sandbox(&t, "pr-5").await;
    assert_eq!(five["state"], "running", "{five}");
    assert_eq!(five["pid"].as_u64(), Some(pid5), "adopted, not restarted");
    let (_, six) = sandbox(&t, "pr-6").await;
    assert_eq!(six["state"], "running", "{six}");
    assert_ne!(six["pid"].as_u64(), Some(pid6), "started again");
    assert_eq!(six["recent_actions"][0]["action"], "restarted", "{six}");
    assert_eq!(six["ports"], json!({"3000": six["ports"]["3000"]}));

    // Both still take deliveries on their old ports.
    for (n, s) in [(5, &five), (6, &six)] {
        let d = send(&t, &receiver, &format!("gh-again-{n}"), opened(n)).await;
        assert_eq!(d["status"], "succeeded", "{d}");
        let port = s["ports"]["3000"].as_u64().unwrap();
        let records = t.echo_records(port).await;
        assert_eq!(
            header(records.last().unwrap(), "x-github-delivery"),
            Some(format!("gh-again-{n}").as_str())
        );
    }
    // The delete_after timer counted from creation, across the restart.
    let s = state_becomes(&t, "pr-5", "deleted", Duration::from_secs(12)).await;
    assert!(
        s["recent_actions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("delete_after")
    );
}

#[tokio::test]
async fn two_hosts_through_the_http_plane() {
    let runner_host = TestHost::start_configured("", &[]).await;
    let remote_url = runner_host.url("");
    let token = runner_host.host.admin_token.clone();
    let t = TestHost::start_configured(
        "",
        &[
            ("HOOKGATE_SANDBOX_PLANE", "http"),
            ("HOOKGATE_SANDBOX_REMOTE_URL", &remote_url),
            ("HOOKGATE_SANDBOX_REMOTE_TOKEN", &token),
        ],
    )
    .await;
    let receiver = t.create(github_receiver()).await;

    let body = opened(42);
    let d = send(&t, &receiver, "gh-1", body.clone()).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    // The sandbox runs on the other host, and this host shows it through it.
    let (_, there) = sandbox(&runner_host, "pr-42").await;
    assert_eq!(there["state"], "running", "{there}");
    let (status, here) = sandbox(&t, "pr-42").await;
    assert_eq!(status, 200);
    assert_eq!(here["ports"], there["ports"]);
    assert!(!t.dir.path().join("sandboxes/pr-42").exists());
    assert!(runner_host.dir.path().join("sandboxes/pr-42").exists());
    let port = there["ports"]["3000"].as_u64().unwrap();
    let records = runner_host.echo_records(port).await;
    assert_eq!(body_of(&records[0]), body);
    assert_eq!(
        header(&records[0], "x-hookgate-delivery-id"),
        d["id"].as_str()
    );

    let d = send(&t, &receiver, "gh-2", opened(42)).await;
    assert!(trace_text(&d).contains("already existed"), "{d}");

    // Paused on the runner host; the next delivery resumes it through the plane.
    let (status, _) = t
        .api(reqwest::Method::POST, "/v1/sandboxes/pr-42/pause", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(sandbox(&runner_host, "pr-42").await.1["state"], "paused");
    let d = send(&t, &receiver, "gh-3", opened(42)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert!(trace_text(&d).contains("resumed by"), "{d}");
    assert_eq!(runner_host.echo_records(port).await.len(), 3);

    let closed = serde_json::to_vec(&pr("closed", 42)).unwrap();
    let d = send(&t, &receiver, "gh-4", closed).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(sandbox(&runner_host, "pr-42").await.1["state"], "deleted");
    assert!(!runner_host.dir.path().join("sandboxes/pr-42").exists());

    // Errors cross the wire as themselves.
    let (status, body) = t
        .api(reqwest::Method::GET, "/v1/sandboxes/pr-404", None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = t
        .api(reqwest::Method::POST, "/v1/sandboxes/pr-404/pause", None)
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_plane_api_checks_its_input() {
    let t = TestHost::start_configured("", &[]).await;
    let post = |path: &'static str, body: Value| {
        let t = &t;
        async move { t.api(reqwest::Method::POST, path, Some(body)).await }
    };
    let (status, body) = post(
        "/v1/sandboxes",
        json!({"name": "ok-name", "template": {"image": "echo", "memory_mb": 1}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("template.memory_mb: "),
        "{body}"
    );
    let (status, body) = post(
        "/v1/sandboxes",
        json!({"name": "../etc", "template": {"image": "echo"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("sandbox name: "),
        "{body}"
    );
    assert!(!t.dir.path().join("etc").exists());

    let (status, body) = post(
        "/v1/sandboxes",
        json!({"name": "box", "template": {"image": "echo", "ports": [8080]}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["result"], "created");
    let (status, body) = post(
        "/v1/sandboxes",
        json!({"name": "box", "template": {"image": "echo", "ports": [8080]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"], "existed");

    // Only the sandbox's own ports, only paths.
    let deliver = |port: u16, path: &str| {
        json!({"port": port, "method": "POST", "path": path, "headers": [],
               "body": "aGk=", "timeout_ms": 2000})
    };
    let (status, body) = post("/v1/sandboxes/box/deliver", deliver(8080, "@127.0.0.1:1/")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("path: "),
        "{body}"
    );
    let (status, body) = post("/v1/sandboxes/box/deliver", deliver(9999, "/")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "sandbox_rejected");
    assert!(
        body["error"].as_str().unwrap().contains("has no port 9999"),
        "{body}"
    );
    let (status, body) = post("/v1/sandboxes/box/deliver", deliver(8080, "/x?y=1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], 200);

    let (status, _) = post("/v1/sandboxes/box/pause", json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = post("/v1/sandboxes/box/deliver", deliver(8080, "/")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "sandbox_paused");

    let (status, body) = post(
        "/v1/sandboxes/box/exec",
        json!({"script": "echo hi", "timeout_seconds": 5}),
    )
    .await;
    assert_eq!(status, 422, "a paused sandbox runs no script: {body}");
    let (status, _) = post("/v1/sandboxes/box/resume", json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = post(
        "/v1/sandboxes/box/exec",
        json!({"script": "echo \"port $HOOKGATE_PORT_8080\"", "timeout_seconds": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["exit_code"], 0);
    assert!(body["data"]["tail"].as_str().unwrap().starts_with("port "));

    let unauthorized = t
        .client
        .delete(t.url("/v1/sandboxes/box"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let (status, body) = t
        .api(reqwest::Method::DELETE, "/v1/sandboxes/box", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["state"], "deleted");
}

#[tokio::test]
async fn envelopes_carry_bytes_and_metadata_and_credentials_stay_behind() {
    let t = TestHost::start_configured("", &[]).await;
    let mut r = github_receiver();
    r["target"] = json!({"target_type": "fixed_sandbox_name", "sandbox_name": "env-box"});
    r["rules"] = json!([{"actions": [
        {"action_type": "ensure_sandbox", "template": {"image": "echo", "ports": [3000, 4000]}},
        {"action_type": "deliver_to_port", "port": 3000, "payload": "envelope", "path": "/in?x=1"},
        {"action_type": "deliver_to_port", "port": 4000,
         "forward_headers": ["X-Hub-Signature-256"]}
    ]}]);
    let receiver = t.create(r).await;
    // Not UTF-8, not JSON: the signature still covers the raw bytes.
    let raw = vec![0xff, 0xfe, 0x00, b'a', 0x80];
    let d = send(&t, &receiver, "gh-bin", raw.clone()).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let (_, s) = sandbox(&t, "env-box").await;

    // One echo process serves both ports and says which one each request hit.
    let port = s["ports"]["3000"].as_u64().unwrap();
    let records = t.echo_records(port).await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["port"], 3000);
    assert_eq!(records[0]["path"], "/in?x=1");
    assert_eq!(
        header(&records[0], "content-type"),
        Some("application/json")
    );
    let envelope: Value = serde_json::from_slice(&body_of(&records[0])).unwrap();
    assert_eq!(envelope["delivery_id"], d["id"]);
    assert_eq!(envelope["sandbox"], "env-box");
    assert_eq!(envelope["body"]["encoding"], "base64");
    let data = envelope["body"]["data"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
        raw
    );
    let names: Vec<&str> = envelope["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.eq_ignore_ascii_case("x-github-delivery")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.eq_ignore_ascii_case("x-hub-signature-256")),
        "{names:?}"
    );

    // The second action asked for the signature header and gets it, bytes as sent.
    assert_eq!(records[1]["port"], 4000);
    assert_eq!(records[1]["path"], "/");
    assert_eq!(body_of(&records[1]), raw);
    assert_eq!(
        header(&records[1], "x-hub-signature-256"),
        Some(crate::support::github_signature(&raw).as_str())
    );
}

#[tokio::test]
async fn concurrent_ensures_create_one_sandbox() {
    let t = TestHost::start_configured("", &[]).await;
    let body = json!({"name": "busy", "template": {"image": "echo", "ports": [3000]}});
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let request = t
            .client
            .post(t.url("/v1/sandboxes"))
            .bearer_auth(&t.host.admin_token)
            .json(&body);
        calls.spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        });
    }
    let answers = calls.join_all().await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let existed = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, existed), (1, 9), "{answers:?}");
    let pids: std::collections::BTreeSet<u64> = answers
        .iter()
        .map(|(_, b)| b["data"]["sandbox"]["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "every answer names the one process");
}

/// Regression (the trust issue): nothing capped how many sandboxes a host would
/// create. `sandbox.max_sandboxes` does, with a clear refusal, counting those
/// being created and freeing a place when one is deleted.
#[tokio::test]
async fn the_number_of_sandboxes_is_capped() {
    let t = TestHost::start_configured("", &[("HOOKGATE_SANDBOX_MAX_SANDBOXES", "2")]).await;
    let ensure = |name: &'static str| {
        let t = &t;
        async move {
            t.api(
                reqwest::Method::POST,
                "/v1/sandboxes",
                Some(json!({"name": name, "template": {"image": "echo"}})),
            )
            .await
        }
    };
    // Three at once for two places: exactly one is refused.
    let (a, b, c) = tokio::join!(ensure("cap-a"), ensure("cap-b"), ensure("cap-c"));
    let refused: Vec<&Value> = [&a, &b, &c]
        .into_iter()
        .filter(|(s, _)| *s == 422)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(refused.len(), 1, "{a:?} {b:?} {c:?}");
    assert_eq!(
        refused[0]["error"],
        "sandbox.max_sandboxes (2) reached: delete a sandbox or raise the setting"
    );
    assert!([&a, &b, &c].iter().filter(|(s, _)| *s == 201).count() == 2);
    // An existing one is still "existed", not refused.
    let made = if a.0 == 201 { "cap-a" } else { "cap-b" };
    assert_eq!(ensure(made).await.0, 200);
    let (status, body) = t
        .api(
            reqwest::Method::DELETE,
            &format!("/v1/sandboxes/{made}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ensure("cap-d").await.0, 201);
}
