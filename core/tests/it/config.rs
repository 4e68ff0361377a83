//! Reading receiver configs: docs/api.md's example verbatim, every kind of mistake
//! reported at its path, and secrets that never come back out.

use hookgate_core::Secret;
use hookgate_core::config::{Action, Auth, AutoResume, Payload, Receiver, Status, Target};
use serde_json::{Value, json};

const DESIGN_EXAMPLE: &str = include_str!("../data/design-github-example.json");

fn design() -> Value {
    serde_json::from_str(DESIGN_EXAMPLE).unwrap()
}

#[test]
fn design_example_parses_verbatim() {
    let r = Receiver::from_slice(DESIGN_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(r.name, "github-pr-preview");
    assert_eq!(r.status, Status::Active);
    assert!(matches!(r.auth, Auth::Hmac(_)));
    assert!(matches!(r.target, Target::SandboxNameFromEvent { .. }));
    assert_eq!(r.rules.len(), 2);
    let Action::EnsureSandbox { template } = &r.rules[0].actions[0] else {
        panic!()
    };
    assert_eq!(template.image, "ghcr.io/islo-labs/islo-runner:latest");
    assert_eq!(
        (template.vcpus, template.memory_mb, template.disk_gb),
        (Some(2), Some(4096), Some(20))
    );
    let lifecycle = template.lifecycle.as_ref().unwrap();
    assert_eq!(
        (lifecycle.pause_after_idle, lifecycle.delete_after),
        (Some(900), Some(604_800))
    );
    assert_eq!(lifecycle.auto_resume, AutoResume::OnActivity);
    let Action::DeliverToPort(d) = &r.rules[0].actions[1] else {
        panic!()
    };
    assert_eq!(
        (d.port, d.payload, d.auto_resume),
        (3000, Payload::Original, AutoResume::OnActivity)
    );
    assert!(matches!(r.rules[1].actions[0], Action::DeleteSandbox));
}

#[test]
fn serializing_hides_secrets_and_reads_back_through_a_secret_store() {
    let r = Receiver::from_json(&design()).unwrap();
    let out = serde_json::to_value(&r).unwrap();
    let text = out.to_string();
    assert!(!text.contains("\"...\""), "secret value serialized: {text}");
    assert_eq!(
        out["auth"]["secret"],
        json!({"secret_ref": "github_webhook_secret"})
    );
    assert!(format!("{r:?}").contains("Secret(\"github_webhook_secret\")"));

    // Without a store, a reference is refused; with one, it resolves.
    let err = Receiver::from_json(&out).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("auth.secret.secret_ref: secret references are only accepted"),
        "{err}"
    );
    let store = |name: &str| (name == "github_webhook_secret").then(|| Secret::new(name, "..."));
    let back = Receiver::from_json_with_secrets(&out, &store).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        out,
        "round trip is stable"
    );
    assert_eq!(back.secrets()[0].expose(), "...");
    let none = |_: &str| None;
    let err = Receiver::from_json_with_secrets(&out, &none).unwrap_err();
    assert_eq!(
        err.to_string(),
        "auth.secret.secret_ref: no stored secret named \"github_webhook_secret\""
    );
}

/// Applies `edit` to docs/api.md's example and returns the error text.
fn error_after(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = design();
    edit(&mut v);
    match Receiver::from_json(&v) {
        Ok(_) => panic!("config accepted: {v}"),
        Err(e) => e.to_string(),
    }
}

type Edit = Box<dyn FnOnce(&mut Value)>;

/// Each edit of docs/api.md's example must be refused with an error starting so.
#[track_caller]
fn assert_errors(cases: Vec<(Edit, &str)>) {
    for (edit, want) in cases {
        let got = error_after(edit);
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}…");
    }
}

#[test]
fn errors_name_the_field_at_fault() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| {
                v["rules"][1]["actions"][0] =
                    json!({"action_type": "deliver_to_port", "port": 70000})
            }),
            "rules[1].actions[0].port: expected an integer 1..65535, found 70000",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][1]["port"] = json!("3000")),
            "rules[0].actions[1].port: expected an integer 1..65535, found the string \"3000\"",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][1]["port"] = json!(0)),
            "rules[0].actions[1].port: expected an integer 1..65535, found 0",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][0]["template"]["vcpus"] = json!(0)),
            "rules[0].actions[0].template.vcpus: expected an integer 1..64, found 0",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][0]["template"]["memory_mb"] = json!(1_u64 << 40)),
            "rules[0].actions[0].template.memory_mb: expected an integer 64..262144, found 1099511627776",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][0]["template"]["colour"] = json!("red")),
            "rules[0].actions[0].template.colour: unknown field; expected one of `disk_gb`, `env`, `image`, `lifecycle`, `memory_mb`, `ports`, `vcpus`",
        ),
        (
            Box::new(|v| v["surprise"] = json!(1)),
            "surprise: unknown field; expected one of",
        ),
        (
            Box::new(|v| v["auth"]["algorithm"] = json!("md5")),
            "auth.algorithm: unknown value \"md5\"; expected one of `sha1`, `sha256`, `sha512`",
        ),
        (
            Box::new(|v| v["auth"]["auth_type"] = json!("magic")),
            "auth.auth_type: unknown value \"magic\"; expected one of `none`, `hmac`",
        ),
        (
            Box::new(|v| v["auth"]["prefix"] = json!(7)),
            "auth.prefix: expected a string, found a number",
        ),
        (
            Box::new(|v| v["rules"] = json!([])),
            "rules: must not be empty",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"] = json!([])),
            "rules[0].actions: must not be empty",
        ),
        (
            Box::new(|v| v["rules"][0]["when"] = json!({"all": []})),
            "rules[0].when.all: must not be empty",
        ),
        (
            Box::new(|v| v["rules"][0]["when"] = json!({"any": []})),
            "rules[0].when.any: must not be empty",
        ),
        (
            Box::new(|v| v["auth"] = json!({"auth_type": "any", "verifiers": []})),
            "auth.verifiers: must not be empty",
        ),
        (
            Box::new(|v| v["rules"][1]["when"] = json!({"json_path": "$..[", "equals": 1})),
            "rules[1].when.json_path: invalid JSONPath \"$..[\"",
        ),
        (
            Box::new(|v| v["rules"][1]["when"] = json!({"header": "X-A", "matches": "(unclosed"})),
            "rules[1].when.matches: invalid regex \"(unclosed\"",
        ),
        (
            Box::new(|v| v["rules"][1]["when"] = json!({"json_path": "$.a"})),
            "rules[1].when: expected an operator",
        ),
        (
            Box::new(|v| {
                v["rules"][1]["when"] = json!({"json_path": "$.a", "equals": 1, "exists": true})
            }),
            "rules[1].when: give one operator, found equals and exists",
        ),
        (
            Box::new(|v| {
                v["target"]["source"] = json!({"source": "json_path", "path": "pull_request"})
            }),
            "target.source.path: invalid JSONPath \"pull_request\"",
        ),
        (
            Box::new(|v| v["target"]["source"] = json!({"source": "body_sha256"})),
            "target.source.source: unknown value \"body_sha256\"",
        ),
        (
            Box::new(|v| v["target"]["allowed_pattern"] = json!("[")),
            "target.allowed_pattern: invalid regex \"[\"",
        ),
        (
            Box::new(|v| v["target"]["required_prefix"] = json!("PR_")),
            "target.required_prefix: expected the start of a sandbox name",
        ),
        (
            Box::new(|v| {
                v["target"] = json!({"target_type": "fixed_sandbox_name", "sandbox_name": "../x"})
            }),
            "target.sandbox_name: sandbox name \"../x\" has '.'",
        ),
        (
            Box::new(|v| v["target"]["allowed_names"] = json!(["ok", "a;rm"])),
            "target.allowed_names[1]: sandbox name \"a;rm\" has ';'",
        ),
        (
            Box::new(|v| v["auth"]["secret"] = json!({"name": "x"})),
            "auth.secret.value: missing required field",
        ),
        (
            Box::new(|v| v["auth"]["secret"]["value"] = json!("")),
            "auth.secret.value: must not be empty",
        ),
        (
            Box::new(|v| v["auth"]["secret"]["name"] = json!("has space")),
            "auth.secret.name: expected 1..128 characters",
        ),
        (
            Box::new(|v| v["auth"]["signature"]["name"] = json!("Bad Header")),
            "auth.signature.name: \"Bad Header\" is not a valid HTTP header name",
        ),
        (
            Box::new(|v| {
                v["auth"]["signed_payload"] =
                    json!({"type": "template", "template": "{timestamp}.{body}"})
            }),
            "auth.signed_payload.template: uses {timestamp} but no `timestamp` source is configured",
        ),
        (
            Box::new(|v| {
                v["auth"]["signed_payload"] = json!({"type": "template", "template": "{nonce}"})
            }),
            "auth.signed_payload.template: unknown placeholder {nonce}",
        ),
        (
            Box::new(|v| {
                v["auth"]["timestamp"] =
                    json!({"source": "header", "name": "X-T", "tolerance_seconds": 0})
            }),
            "auth.timestamp.tolerance_seconds: expected an integer 1..86400, found 0",
        ),
        (
            Box::new(|v| {
                v["auth"] = json!({"auth_type": "ip_allowlist", "cidrs": ["10.0.0.0/33"]})
            }),
            "auth.cidrs[0]: \"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        (
            Box::new(|v| v["auth"] = json!({"auth_type": "jwt", "algorithms": ["RS256"]})),
            "auth.jwks: RS256/ES256/EdDSA need `jwks` or `jwks_url`",
        ),
        (
            Box::new(|v| v["auth"] = json!({"auth_type": "jwt", "algorithms": ["HS256"]})),
            "auth.secret: HS256/HS384/HS512 need a `secret`",
        ),
        (
            Box::new(|v| {
                v["auth"] =
                    json!({"auth_type": "jwt", "algorithms": ["PS256"], "jwks_url": "https://x"})
            }),
            "auth.algorithms[0]: unknown algorithm \"PS256\"",
        ),
        (
            Box::new(
                |v| v["auth"] = json!({"auth_type": "jwt", "algorithms": ["RS256"], "jwks_url": "file:///etc/passwd"}),
            ),
            "auth.jwks_url: expected an https:// URL (http:// only for 127.0.0.1, [::1] or localhost)",
        ),
        (
            Box::new(
                |v| v["auth"] = json!({"auth_type": "provider", "provider": "myspace", "secret": {"name": "a", "value": "b"}}),
            ),
            "auth.provider: unknown value \"myspace\"",
        ),
        (
            Box::new(|v| v["auth"] = json!({"auth_type": "plugin", "plugin": "../evil"})),
            "auth.plugin: expected a plugin name",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][1]["path"] = json!("/../admin")),
            "rules[0].actions[1].path: expected an absolute path",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][1]["path"] = json!("//evil.example/x")),
            "rules[0].actions[1].path: expected an absolute path",
        ),
        (
            Box::new(|v| {
                v["rules"][0]["actions"][0]["template"]["lifecycle"]["auto_resume"] =
                    json!("always")
            }),
            "rules[0].actions[0].template.lifecycle.auto_resume: unknown value \"always\"",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][0]["template"]["env"] = json!({"1BAD": "x"})),
            "rules[0].actions[0].template.env.1BAD: expected a variable name",
        ),
        (
            Box::new(|v| v["idempotency"]["retention_seconds"] = json!(5)),
            "idempotency.retention_seconds: expected an integer 60..2592000, found 5",
        ),
        (
            Box::new(|v| v["max_body_bytes"] = json!(0)),
            "max_body_bytes: expected an integer 1..33554432, found 0",
        ),
        (
            Box::new(|v| v["status"] = json!("paused")),
            "status: unknown value \"paused\"; expected one of `active`, `disabled`",
        ),
        (
            Box::new(|v| v["name"] = json!("  ")),
            "name: must not be empty",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("target");
            }),
            "target: missing required field",
        ),
        (
            Box::new(|v| *v = json!([1])),
            "expected an object, found an array",
        ),
    ];
    assert_errors(cases);
}

#[test]
fn accepted_edge_cases() {
    let mut v = design();
    // A timestamp read from a signed body is protected by the signature.
    v["auth"]["timestamp"] =
        json!({"source": "json_path", "path": "$.ts", "format": "unix_millis"});
    // JSON null is a value a rule may compare against.
    v["rules"][0]["when"] = json!({"json_path": "$.draft", "equals": null});
    v["rules"][0]["actions"][1]["path"] = json!("/hooks/github%20x?q=1");
    v["rules"].as_array_mut().unwrap().push(json!({"when": {"json_path": "$.a", "not_equals": null}, "actions": [{"action_type": "pause_sandbox"}]}));
    let r = Receiver::from_json(&v).unwrap_or_else(|e| panic!("{e}"));
    let out = serde_json::to_value(&r).unwrap();
    assert_eq!(
        out["rules"][0]["when"],
        json!({"json_path": "$.draft", "equals": null})
    );
    for url in [
        "http://127.0.0.1:8099/jwks",
        "http://localhost/jwks",
        "http://[::1]:9/jwks",
        "https://idp.example/jwks",
    ] {
        let mut v = design();
        v["auth"] = json!({"auth_type": "jwt", "algorithms": ["RS256"], "jwks_url": url});
        assert!(Receiver::from_json(&v).is_ok(), "{url}");
    }
}

#[test]
fn unsafe_settings_are_refused() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(
                |v| v["auth"] = json!({"auth_type": "jwt", "algorithms": ["RS256"], "jwks_url": "http://idp.example/jwks"}),
            ),
            "auth.jwks_url: expected an https:// URL",
        ),
        (
            Box::new(
                |v| v["auth"] = json!({"auth_type": "jwt", "algorithms": ["HS256"], "secret": {"name": "k", "value": "v"}, "jwks_url": "https://idp/jwks"}),
            ),
            "auth.jwks_url: keys are only used by RS256/ES256/EdDSA",
        ),
        (
            Box::new(|v| v["auth"]["timestamp"] = json!({"source": "header", "name": "X-T"})),
            "auth.timestamp: the timestamp is not signed",
        ),
        (
            Box::new(|v| {
                v["auth"]["timestamp"] = json!({"source": "header", "name": "X-T"});
                v["auth"]["signed_payload"] = json!({"type": "template", "template": "{body}"});
            }),
            "auth.timestamp: the timestamp is not signed",
        ),
        (
            Box::new(|v| {
                v["auth"]["timestamp"] = json!({"source": "json_path", "path": "$.ts"});
                v["auth"]["signed_payload"] =
                    json!({"type": "template", "template": "{header:X-A}"});
            }),
            "auth.timestamp: the timestamp is not signed",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][1]["path"] = json!("/%2e%2e/admin")),
            "rules[0].actions[1].path: expected an absolute path",
        ),
        (
            Box::new(|v| v["rules"][0]["actions"][1]["path"] = json!("/a/./b")),
            "rules[0].actions[1].path: expected an absolute path",
        ),
    ];
    assert_errors(cases);
}

#[test]
fn one_secret_name_cannot_carry_two_values() {
    let err = error_after(|v| {
        v["auth"] = json!({"auth_type": "any", "verifiers": [
            {"auth_type": "bearer_static", "secret": {"name": "tok", "value": "a"}},
            {"auth_type": "header_equals", "name": "X-Token", "secret": {"name": "tok", "value": "b"}}
        ]});
    });
    assert_eq!(
        err,
        "auth.verifiers[1].secret: secret \"tok\" is given twice with different values"
    );
}

#[test]
fn inventory_of_secrets_plugins_and_key_sets() {
    let mut v = design();
    v["auth"] = json!({"auth_type": "all", "verifiers": [
        {"auth_type": "ip_allowlist", "cidrs": ["192.30.252.0/22", "2a0a:a440::/29", "10.1.2.3"]},
        {"auth_type": "any", "verifiers": [
            {"auth_type": "plugin", "plugin": "discord-ed25519", "config": {"public_key": "ab"}},
            {"auth_type": "basic", "username": "ci", "password": {"name": "ci_pw", "value": "pw"}},
            {"auth_type": "jwt", "algorithms": ["RS256"], "jwks_url": "https://idp/jwks"}
        ]}
    ]});
    v["rules"][0]["actions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"action_type": "plugin", "plugin": "reshape"}));
    let r = Receiver::from_json(&v).unwrap();
    assert_eq!(r.plugins(), vec!["discord-ed25519", "reshape"]);
    assert_eq!(r.jwks_urls(), vec!["https://idp/jwks"]);
    let names: Vec<&str> = r.secrets().iter().map(|s| s.name()).collect();
    assert_eq!(names, vec!["ci_pw"]);
    let out = serde_json::to_value(&r).unwrap();
    assert_eq!(
        out["auth"]["verifiers"][0]["cidrs"],
        json!(["192.30.252.0/22", "2a0a:a440::/29", "10.1.2.3/32"])
    );
}

#[test]
fn not_json_at_all() {
    let err = Receiver::from_slice(b"{\"name\": ").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("reading config: not valid JSON: EOF while parsing"),
        "{err}"
    );
}

/// A plugin verifier's config may hold secrets: the plugin gets the value in
/// place, the receiver stores and shows a reference, and reading it back with
/// its stored secrets gives the plugin the same config.
#[test]
fn plugin_configs_hold_write_only_secrets() {
    let v = json!({
        "name": "p",
        "auth": {"auth_type": "plugin", "plugin": "verify-me", "config": {
            "keys": [{"secret": {"name": "plugin_key", "value": "k-0123456789"}}],
            "mode": "strict"
        }},
        "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "box"},
        "rules": [{"actions": [{"action_type": "resume_sandbox"}]}]
    });
    let r = Receiver::from_json(&v).unwrap();
    let Auth::Plugin(p) = &r.auth else { panic!() };
    assert_eq!(
        p.config,
        json!({"keys": ["k-0123456789"], "mode": "strict"})
    );
    let stored = serde_json::to_value(&r).unwrap();
    assert_eq!(
        stored["auth"]["config"],
        json!({"keys": [{"secret": {"secret_ref": "plugin_key"}}], "mode": "strict"})
    );
    assert!(!stored.to_string().contains("k-0123456789"));
    assert!(!format!("{r:?}").contains("k-0123456789"));
    let names: Vec<&str> = r.secrets().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["plugin_key"]);
    let source = |name: &str| (name == "plugin_key").then(|| Secret::new(name, "k-0123456789"));
    let back = Receiver::from_json_with_secrets(&stored, &source).unwrap();
    let Auth::Plugin(p) = &back.auth else {
        panic!()
    };
    assert_eq!(
        p.config,
        json!({"keys": ["k-0123456789"], "mode": "strict"})
    );
    // A secret with no value is refused at its path.
    let mut bad = v.clone();
    bad["auth"]["config"]["keys"][0]["secret"]["value"] = json!("");
    let err = Receiver::from_json(&bad).unwrap_err().to_string();
    assert!(err.starts_with("auth.config.keys[0].secret.value"), "{err}");
}
