//! Builds `plugins/` (its own workspace) for `wasm32-wasip2` in release mode and
//! writes `plugins.rs`: one `pub const <NAME>: &str = "<path>.wasm";` per plugin.
//!
//! The nested cargo gets its own target directory and none of the outer build's
//! flags, so it neither waits on the outer build's lock nor inherits host-only
//! settings.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugins to build: crate name and the constant that names its file.
const PLUGINS: &[(&str, &str)] = &[
    ("discord-ed25519", "DISCORD_ED25519"),
    ("standard-webhooks-v1a", "STANDARD_WEBHOOKS_V1A"),
    ("telnyx-ed25519", "TELNYX_ED25519"),
    ("reshape-json", "RESHAPE_JSON"),
    ("hostile", "HOSTILE"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let plugins = manifest_dir.join("../../plugins");
    let wit = manifest_dir.join("../../wit");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    // Beside the outer target directory, shared by every build profile.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map_or_else(|| out.join("plugins-target"), |t| t.join("plugins-target"));
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", wit.display());

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--target=wasm32-wasip2")
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_LLVM_COV",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the guest plugins");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed ({status}); scripts/setup adds the target"
    );

    let mut code = String::new();
    for (krate, constant) in PLUGINS {
        let file = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", krate.replace('-', "_")));
        assert!(exists(&file), "{} was not built", file.display());
        code.push_str(&format!(
            "/// `plugins/{krate}`, built for wasm32-wasip2.\npub const {constant}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    std::fs::write(out.join("plugins.rs"), code).expect("writing plugins.rs");
}

fn exists(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.len() > 0)
}
