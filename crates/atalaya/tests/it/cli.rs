//! The command line's own contract: help texts, exit codes, config errors.

use std::process::Command;

use crate::harness::binary;

fn run(args: &[&str], config: Option<&str>) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command.args(args).current_dir(dir.path());
    for (name, _) in std::env::vars() {
        if name.starts_with("ATALAYA_") || name.starts_with("OPENAI_") {
            command.env_remove(name);
        }
    }
    if let Some(config) = config {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        command.arg("--config").arg(&path);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_commands_and_serve_flags() {
    let (ok, stdout, _) = run(&["--help"], None);
    assert!(ok);
    for command in [
        "serve",
        "mock-provider",
        "keys",
        "providers",
        "compare",
        "secrets",
    ] {
        assert!(stdout.contains(command), "{stdout}");
    }
    let (ok, stdout, _) = run(&["serve", "--help"], None);
    assert!(ok);
    for flag in [
        "--config",
        "--listen",
        "--data-dir",
        "127.0.0.1:4000",
        "./atalaya-data",
        "ATALAYA_DATABASE_URL",
        "OPENAI_API_KEY",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from:\n{stdout}");
    }
}

#[test]
fn a_wrong_config_names_the_key_and_the_file_and_exits_non_zero() {
    let (ok, _, stderr) = run(
        &["serve", "--listen", "127.0.0.1:0"],
        Some("[server]\nmax_body_bytes = \"big\"\n"),
    );
    assert!(!ok);
    assert!(
        stderr.contains("server.max_body_bytes") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one clear message expected:\n{stderr}"
    );

    let (ok, _, stderr) = run(&["serve"], Some("[sever]\nlisten = \"127.0.0.1:0\"\n"));
    assert!(!ok);
    assert!(stderr.contains("sever"), "{stderr}");

    let (ok, _, stderr) = run(&["serve", "--listen", "not-an-address"], Some(""));
    assert!(!ok);
    assert!(stderr.contains("server.listen"), "{stderr}");
}
