//! The `hookgate` binary on a data directory hookgate 0.1.0 left behind
//! (tests/data/v1-datadir): after the schema migrations, receivers with their
//! secrets, deliveries with their traces and sandboxes are all still there; and a
//! database from a newer release is refused, left byte for byte as it was.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Method;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::support::{answer, free_port, github_signature, pr};

const TOKEN: &str = "hg_test_admin_token_for_upgrade_tests";

/// The checked-in database of hookgate 0.1.0 (see tests/data/v1-datadir/README.md).
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/v1-datadir/hookgate.db")
}

/// A fresh data directory holding a copy of the fixture.
fn data_dir_from_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(), dir.path().join("hookgate.db")).unwrap();
    dir
}

/// `hookgate serve` on `dir`, its errors on a pipe.
fn serve(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("serve")
        .current_dir(dir)
        .env("HOOKGATE_DATA_DIR", dir)
        .env("HOOKGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKGATE_ADMIN_TOKEN", TOKEN)
        .env("HOOKGATE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hookgate serve")
}

/// Waits for `child` to exit; `None` if it still runs after `limit`.
fn exited(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// A host serving a data directory; killed if the test ends without stopping it.
struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let mut child = serve(dir, port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("hookgate serve exited {status}: {}", stderr_of(&mut child));
            }
            assert!(Instant::now() < deadline, "hookgate serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// A management call; its status and JSON.
    async fn api(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .request(Method::GET, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// `api` expecting 200; the response's data.
    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body["data"].clone()
    }

    /// POSTs `body` to a receiver's URL with `headers`.
    async fn hook(&self, receiver: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/hooks/{receiver}", self.base))
            .header("Content-Type", "application/json")
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        answer(req.send().await.unwrap()).await
    }

    /// SIGTERM, then its exit status.
    fn stop(mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        exited(&mut self.child, Duration::from_secs(35)).expect("exit after SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture's rows, read without touching the file (`immutable`).
fn fixture_rows(sql: &str) -> Vec<Vec<Value>> {
    let uri = format!("file:{}?immutable=1", fixture().display());
    let c = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let mut stmt = c.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                    rusqlite::types::Value::Null => Value::Null,
                    rusqlite::types::Value::Integer(i) => Value::from(i),
                    rusqlite::types::Value::Text(t) => Value::from(t),
                    other => panic!("unexpected column value {other:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_0_1_0_comes_through_the_upgrade_intact() {
    let dir = data_dir_from_fixture();
    let server = Server::start(dir.path());

    // Receivers: the live ones listed with their names and statuses, the deleted
    // one gone from the list and its URL, but not from the database.
    let receivers = fixture_rows("SELECT id, name, status, deleted_at FROM receivers");
    let id_of = |name: &str| -> String {
        let row = receivers.iter().find(|r| r[1] == name).unwrap();
        text(&row[0]).to_owned()
    };
    let (github, ops, gone) = (
        id_of("github-pr-preview"),
        id_of("ops-hook"),
        id_of("gone-hook"),
    );
    let listed = server.get("/v1/webhooks/incoming?limit=100").await;
    let listed: BTreeMap<&str, (&str, &str)> = listed["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (text(&r["id"]), (text(&r["name"]), text(&r["status"]))))
        .collect();
    let want = BTreeMap::from([
        (github.as_str(), ("github-pr-preview", "active")),
        (ops.as_str(), ("ops-hook", "disabled")),
    ]);
    assert_eq!(listed, want);
    let (status, _) = server.api(&format!("/v1/webhooks/incoming/{gone}")).await;
    assert_eq!(status, 404);

    // Secrets: the HMAC secret still verifies (and still refuses a wrong one); the
    // disabled and the deleted receiver answer 404 at their URLs.
    let body = serde_json::to_vec(&pr("labeled", 5)).unwrap();
    let signature = github_signature(&body);
    let signed = [
        ("X-GitHub-Delivery", "after-the-upgrade"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let (status, accepted) = server.hook(&github, &signed, body.clone()).await;
    assert_eq!(status, 202, "{accepted}");
    let forged = [
        ("X-GitHub-Delivery", "forged"),
        ("X-Hub-Signature-256", "sha256=00"),
    ];
    let (status, refused) = server.hook(&github, &forged, body).await;
    assert_eq!(status, 401, "{refused}");
    let token = [("X-Ops-Token", "test-ops-token")];
    let (status, _) = server.hook(&ops, &token, b"{}".to_vec()).await;
    assert_eq!(status, 404);
    let (status, _) = server.hook(&gone, &[], b"{}".to_vec()).await;
    assert_eq!(status, 404);
    let new_id = text(&accepted["data"]["delivery_id"]).to_owned();
    let new = server.get(&format!("/v1/deliveries/{new_id}")).await;
    assert_eq!(new["status"], "no_match");
    assert!(
        text(&new["explain"]).contains("matched secret github_webhook_secret"),
        "{new}"
    );

    // Deliveries: every old one with its status, error, replay link and trace.
    let deliveries = fixture_rows(
        "SELECT id, receiver_id, status, last_error, replay_of, sandbox, trace FROM deliveries",
    );
    assert_eq!(deliveries.len(), 7);
    for d in &deliveries {
        let got = server.get(&format!("/v1/deliveries/{}", text(&d[0]))).await;
        let trace: Value = serde_json::from_str(text(&d[6])).unwrap();
        assert_eq!(
            [
                &got["receiver_id"],
                &got["status"],
                &got["last_error"],
                &got["replay_of"],
                &got["sandbox"],
                &got["trace"]
            ],
            [&d[1], &d[2], &d[3], &d[4], &d[5], &trace],
            "delivery {}",
            d[0]
        );
    }
    let mut statuses = BTreeMap::new();
    for (name, id) in [("github", &github), ("ops", &ops), ("gone", &gone)] {
        let path = format!("/v1/webhooks/incoming/{id}/deliveries?limit=100");
        let list = server.get(&path).await;
        let mut seen: Vec<&str> = list["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["id"] != new_id.as_str())
            .map(|d| text(&d["status"]))
            .collect();
        seen.sort_unstable();
        statuses.insert(name, seen.join(" "));
    }
    assert_eq!(
        statuses,
        BTreeMap::from([
            (
                "github",
                "failed no_match no_match succeeded succeeded".to_owned()
            ),
            ("ops", "no_match".to_owned()),
            ("gone", "no_match".to_owned()),
        ])
    );
    let failed = deliveries.iter().find(|d| d[2] == "failed").unwrap();
    assert!(text(&failed[3]).contains("has no port 3001"), "{failed:?}");
    assert!(deliveries.iter().any(|d| d[4].is_string()), "a replay");

    // Sandboxes: as they were, with their history.
    let sandboxes = server.get("/v1/sandboxes").await;
    let sandboxes: BTreeMap<&str, (&str, &str, &Value)> = sandboxes["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                text(&s["name"]),
                (text(&s["state"]), text(&s["image"]), &s["exit_status"]),
            )
        })
        .collect();
    let stored = fixture_rows("SELECT name, state, image, exit_status FROM sandboxes");
    let stored: BTreeMap<&str, (&str, &str, &Value)> = stored
        .iter()
        .map(|s| (text(&s[0]), (text(&s[1]), text(&s[2]), &s[3])))
        .collect();
    assert_eq!(sandboxes, stored);
    assert_eq!(
        sandboxes.iter().map(|(n, s)| (*n, s.0)).collect::<Vec<_>>(),
        [("pr-1", "deleted"), ("pr-2", "failed")]
    );
    let events = fixture_rows("SELECT count(*) FROM sandbox_events WHERE sandbox = 'pr-2'");
    let pr2 = server.get("/v1/sandboxes/pr-2").await;
    assert_eq!(
        i64::try_from(pr2["recent_actions"].as_array().unwrap().len()).unwrap(),
        events[0][0].as_i64().unwrap().min(20)
    );

    // Stopped, the database is at the new version and whole.
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    let db = Connection::open(dir.path().join("hookgate.db")).unwrap();
    let version: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert!(version >= 2, "user_version {version}");
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn a_database_from_a_newer_release_is_refused_and_left_as_it_was() {
    let dir = data_dir_from_fixture();
    let db = dir.path().join("hookgate.db");
    Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 1000)
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let mut child = serve(dir.path(), free_port());
    let Some(status) = exited(&mut child, Duration::from_secs(20)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("hookgate serve ran on a database from a newer release");
    };
    let stderr = stderr_of(&mut child);
    assert!(!status.success(), "exit status {status}");
    let want = format!(
        "the database at {} has schema version 1000, but this hookgate knows versions up to ",
        db.display()
    );
    assert!(
        stderr.contains(&want) && stderr.contains(": run a newer release"),
        "{stderr}"
    );
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the refused database changed"
    );
    for leftover in ["hookgate.db-wal", "hookgate.db-shm"] {
        assert!(
            !dir.path().join(leftover).exists(),
            "{leftover} left behind"
        );
    }
}
