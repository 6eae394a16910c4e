//! The command line: help texts, configuration errors that name file and key, and
//! `config check` / `config show`.

use std::io::Write;

use crate::kit::bounded;
use crate::kit::process::{run_to_end, shipped_config};

#[tokio::test]
async fn help_describes_commands_and_overrides() {
    bounded(async {
        let (status, stdout, _) = run_to_end(&["--help"]).await;
        assert!(status.success());
        for word in ["run", "config", "web filter"] {
            assert!(stdout.contains(word), "--help lacks {word:?}:\n{stdout}");
        }
        let (status, stdout, _) = run_to_end(&["run", "--help"]).await;
        assert!(status.success());
        for word in [
            "--config",
            "--set",
            "KEY=VALUE",
            "proxy.listen",
            "SAFEGATE_CONFIG",
        ] {
            assert!(
                stdout.contains(word),
                "run --help lacks {word:?}:\n{stdout}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn shipped_configuration_checks_clean_and_shows_effective_values() {
    bounded(async {
        let config = shipped_config().display().to_string();
        let (status, stdout, stderr) = run_to_end(&["config", "check", "--config", &config]).await;
        assert!(status.success(), "{stdout}{stderr}");
        let (status, stdout, stderr) = run_to_end(&[
            "config",
            "show",
            "--config",
            &config,
            "--set",
            "proxy.listen=\"127.0.0.1:4128\"",
            "--set",
            "upstream.allow_loopback=true",
            "--set",
            "auth.ldap={ servers = [\"ldaps://dc1.school.test\"], bind_dn = \"cn=sg\", \
             bind_password = \"ldap-secret-1\", base_dn = \"dc=school\", \
             groups = [{ dn = \"cn=staff\", role = \"staff\" }] }",
            "--set",
            "export.clickhouse={ url = \"https://ch.trust.test:8443\", school = \"s1\", \
             password = \"clickhouse-secret-2\" }",
        ])
        .await;
        assert!(status.success(), "{stderr}");
        assert!(stdout.contains("127.0.0.1:4128"), "{stdout}");
        assert!(stdout.contains("allow_loopback = true"), "{stdout}");
        // Secrets written into the configuration are not shown.
        assert!(
            stdout.contains("bind_password = \"<redacted>\""),
            "{stdout}"
        );
        assert!(!stdout.contains("ldap-secret-1"), "{stdout}");
        assert!(!stdout.contains("clickhouse-secret-2"), "{stdout}");
    })
    .await;
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[tokio::test]
async fn wrong_type_names_file_line_and_key_and_exits_non_zero() {
    bounded(async {
        let file = config_file("data_dir = \"data\"\n\n[proxy]\nlisten = 3128\n");
        let path = file.path().display().to_string();
        let (status, _, stderr) = run_to_end(&["run", "--config", &path]).await;
        assert!(!status.success());
        assert!(stderr.contains(&path), "{stderr}");
        assert!(stderr.contains("proxy.listen"), "{stderr}");
        assert!(stderr.contains(":4:"), "no line number in {stderr}");
    })
    .await;
}

#[tokio::test]
async fn unknown_key_and_syntax_error_are_refused() {
    bounded(async {
        let file = config_file("[proxy]\nlisten_port = 3128\n");
        let path = file.path().display().to_string();
        let (status, _, stderr) = run_to_end(&["config", "check", "--config", &path]).await;
        assert!(!status.success());
        assert!(stderr.contains("listen_port"), "{stderr}");

        let file = config_file("[proxy\nlisten = \"127.0.0.1:3128\"\n");
        let path = file.path().display().to_string();
        let (status, _, stderr) = run_to_end(&["run", "--config", &path]).await;
        assert!(!status.success());
        assert!(stderr.contains(&path) && stderr.contains("1:"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn invalid_values_are_all_listed_with_their_keys() {
    bounded(async {
        let config = shipped_config().display().to_string();
        let (status, _, stderr) = run_to_end(&[
            "run",
            "--config",
            &config,
            "--set",
            "proxy.connect_ports=[0]",
            "--set",
            "proxy.max_connections=0",
            "--set",
            "proxy.http_ports=[80, \"9000-8000\", \"x\"]",
        ])
        .await;
        assert!(!status.success());
        assert!(stderr.contains("proxy.connect_ports"), "{stderr}");
        assert!(stderr.contains("proxy.http_ports"), "{stderr}");
        assert!(stderr.contains("9000-8000"), "{stderr}");
        assert!(stderr.contains("proxy.max_connections"), "{stderr}");

        let (status, _, stderr) = run_to_end(&[
            "run",
            "--config",
            &config,
            "--set",
            "upstream.allow_loopback=maybe",
        ])
        .await;
        assert!(!status.success());
        assert!(stderr.contains("upstream.allow_loopback"), "{stderr}");

        let (status, _, stderr) =
            run_to_end(&["run", "--config", "/nonexistent/safegate.toml"]).await;
        assert!(!status.success());
        assert!(stderr.contains("/nonexistent/safegate.toml"), "{stderr}");
    })
    .await;
}
