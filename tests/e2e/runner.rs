//! The runner: retries with backoff, permanent failures, order per sandbox,
//! parallelism across sandboxes, and resuming after a restart.

use std::time::{Duration, Instant};

use hookgate::sandbox::PlaneError;
use hookgate::sandbox::memory::{Call, Fault};
use serde_json::json;

use crate::support::*;

fn receiver(actions: serde_json::Value) -> serde_json::Value {
    let mut r = github_receiver();
    r["rules"] = json!([{"actions": actions}]);
    r
}

async fn deliver(t: &TestHost, id: &str, delivery: &str, number: u64) -> String {
    let (status, b) = t.github(id, delivery, &pr("opened", number)).await;
    assert_eq!(status, 202, "{b}");
    b["data"]["delivery_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn retryable_failures_are_retried_with_backoff() {
    let t = TestHost::start().await;
    let id = t
        .create(receiver(
            json!([{"action_type": "deliver_to_port", "port": 3000}]),
        ))
        .await;
    // The sandbox must exist to be delivered to.
    let ensure = t
        .create(receiver(
            json!([{"action_type": "ensure_sandbox", "template": {"image": "x"}}]),
        ))
        .await;
    t.settled(&deliver(&t, &ensure, "e", 5).await).await;
    t.plane().inject(Fault::Fail {
        op: "deliver",
        times: 2,
        error: PlaneError::Unavailable("connection refused".into()),
    });
    let d = t.settled(&deliver(&t, &id, "r-1", 5).await).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let explain = d["explain"].as_str().unwrap();
    let lines: Vec<&str> = explain
        .lines()
        .filter(|l| l.contains("action 1 of 1"))
        .collect();
    assert_eq!(lines.len(), 3, "{explain}");
    assert!(
        lines[0].starts_with("[FAIL] action 1 of 1 (deliver_to_port, rule 1): attempt 1, "),
        "{explain}"
    );
    assert!(
        lines[0].contains(" ms: connection refused; retrying in "),
        "{explain}"
    );
    assert!(
        lines[1].contains("attempt 2, ") && lines[1].contains("connection refused"),
        "{explain}"
    );
    assert!(
        lines[2].starts_with("[pass]")
            && lines[2].contains("attempt 3, ")
            && lines[2].ends_with("port 3000 answered 200"),
        "{explain}"
    );

    // A 503 is retried; a 404 is not.
    t.plane().inject(Fault::Status {
        times: 1,
        status: 503,
    });
    assert_eq!(
        t.settled(&deliver(&t, &id, "r-2", 5).await).await["status"],
        "succeeded"
    );
    t.plane().inject(Fault::Status {
        times: 1,
        status: 404,
    });
    let d = t.settled(&deliver(&t, &id, "r-3", 5).await).await;
    assert_eq!(d["status"], "failed");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("port 3000 answered 404; not retried"),
        "{d}"
    );
}

#[tokio::test]
async fn attempts_are_bounded_and_a_failure_stops_the_rest() {
    let t = TestHost::start_with(&[("HOOKGATE_RUNNER_MAX_ATTEMPTS", "3")]).await;
    let id = t
        .create(receiver(json!([
            {"action_type": "ensure_sandbox", "template": {"image": "x"}},
            {"action_type": "deliver_to_port", "port": 3000},
            {"action_type": "pause_sandbox"}
        ])))
        .await;
    t.plane().inject(Fault::Fail {
        op: "deliver",
        times: 100,
        error: PlaneError::Unavailable("down".into()),
    });
    let d = t.settled(&deliver(&t, &id, "b-1", 8).await).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["attempts"], 3);
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .ends_with("giving up after 3 attempts"),
        "{d}"
    );
    assert!(
        d["explain"]
            .as_str()
            .unwrap()
            .contains("action 3 of 3: skipped, an earlier action failed")
    );
    assert!(!t.plane().calls().contains(&Call::Pause("pr-8".into())));

    // A permanent refusal is not retried at all.
    t.plane().clear_faults();
    t.plane().inject(Fault::Fail {
        op: "ensure",
        times: 1,
        error: PlaneError::Rejected("image not allowed".into()),
    });
    let d = t.settled(&deliver(&t, &id, "b-2", 9).await).await;
    assert_eq!(
        (d["status"].as_str(), d["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("image not allowed; not retried")
    );
}

#[tokio::test]
async fn one_sandbox_in_order_different_sandboxes_in_parallel() {
    let t = TestHost::start().await;
    let id = t
        .create(receiver(json!([
            {"action_type": "ensure_sandbox", "template": {"image": "x"}},
            {"action_type": "deliver_to_port", "port": 3000}
        ])))
        .await;
    // The first ensure of sandbox pr-1 stalls.
    t.plane().inject(Fault::Stall {
        op: "ensure",
        times: 1,
        delay: Duration::from_millis(600),
    });
    let first = deliver(&t, &id, "o-1", 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = deliver(&t, &id, "o-2", 1).await;
    let third = deliver(&t, &id, "o-3", 1).await;
    // Another sandbox is not held up by pr-1's stall.
    let started = Instant::now();
    let other = deliver(&t, &id, "o-4", 2).await;
    t.settled(&other).await;
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "pr-2 waited for pr-1"
    );
    for d in [&first, &second, &third] {
        assert_eq!(t.settled(d).await["status"], "succeeded");
    }
    let order: Vec<String> = t
        .plane()
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Deliver {
                sandbox,
                delivery_id,
                ..
            } if sandbox == "pr-1" => delivery_id,
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec![first, second, third],
        "arrival order per sandbox"
    );
}

#[tokio::test]
async fn pending_work_resumes_after_a_restart() {
    let t = TestHost::start().await;
    let id = t
        .create(receiver(json!([
            {"action_type": "ensure_sandbox", "template": {"image": "x"}},
            {"action_type": "deliver_to_port", "port": 3000}
        ])))
        .await;
    t.plane().inject(Fault::Fail {
        op: "deliver",
        times: 1000,
        error: PlaneError::Unavailable("sandbox booting".into()),
    });
    let a = deliver(&t, &id, "p-1", 11).await;
    let b = deliver(&t, &id, "p-2", 12).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(t.delivery(&a).await["status"], "pending");
    let t = t.restart().await;
    t.plane().clear_faults();
    // Keys outlive the restart: the provider's retry is still a duplicate.
    let (status, again) = t.github(&id, "p-1", &pr("opened", 11)).await;
    assert_eq!(
        (status, again["data"]["delivery_id"].as_str()),
        (200, Some(a.as_str()))
    );
    for d in [&a, &b] {
        let done = t.settled(d).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    // Each delivery reached its sandbox once successfully, carrying its id.
    let delivered: Vec<String> = t
        .plane()
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Deliver { delivery_id, .. } => delivery_id,
            _ => None,
        })
        .collect();
    assert!(delivered.contains(&a) && delivered.contains(&b));
}
