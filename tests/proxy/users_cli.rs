//! `safegate users add|list|passwd|disable|enable|remove|update|import`: through the
//! running service's control socket, then on the database directly once SafeGate has
//! stopped (same answers); an import with a bad row changes nothing; passwords and
//! hashes never appear in listings or in the service's log.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use safegate_store::Store;
use safegate_store::password::verify_password;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::kit::bounded;
use crate::kit::process::{SafeGate, binary, run_to_end, shipped_config};

/// Runs `safegate users ARGS` on the shipped configuration with `data_dir`, feeding
/// `stdin` to it.
async fn users_cmd(data_dir: &Path, args: &[&str], stdin: &str) -> (ExitStatus, String, String) {
    let config = shipped_config().display().to_string();
    let data = format!("data_dir={:?}", data_dir.display().to_string());
    let mut all: Vec<&str> = vec!["users"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &config, "--set", &data]);
    let mut child = Command::new(binary())
        .args(&all)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command that does not read its input (or has already failed) may have closed
    // it: a broken pipe here is not the test's concern, the exit status is.
    let _ = input.write_all(stdin.as_bytes()).await;
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("users {args:?} did not finish in 40s"))
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `safegate users ARGS`, which must succeed; its standard output.
pub(crate) async fn users_ok(data_dir: &Path, args: &[&str], stdin: &str) -> String {
    let (status, stdout, stderr) = users_cmd(data_dir, args, stdin).await;
    assert!(
        status.success(),
        "users {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// `safegate users ARGS`, which must fail; its standard error.
async fn users_fails(data_dir: &Path, args: &[&str], stdin: &str) -> String {
    let (status, stdout, stderr) = users_cmd(data_dir, args, stdin).await;
    assert!(
        !status.success(),
        "users {args:?} succeeded:\n{stdout}\n{stderr}"
    );
    stderr
}

async fn users_json(data_dir: &Path) -> Vec<serde_json::Value> {
    let stdout = users_ok(data_dir, &["list", "--json"], "").await;
    assert!(
        !stdout.contains("argon2") && !stdout.contains("hash"),
        "a listing shows a hash:\n{stdout}"
    );
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("users list --json: not JSON ({e}):\n{stdout}"));
    value.as_array().unwrap().clone()
}

fn names(users: &[serde_json::Value]) -> Vec<String> {
    users
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

fn user<'a>(users: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    users
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no user {name} in {users:#?}"))
}

const BAD_CSV: &str = "User,Display Name,Role,Group,Password\n\
                       year3,Year 3,pupil,year3,daffodil-2026\n\
                       mr.jones,Mr Jones,teacher,,correct horse battery\n\
                       year4,Year 4,pupil,year4,primrose-2026\n\
                       year9,Year 9,pupil,year9,bluebell-2026\n";

const GOOD_CSV: &str = "User,Display Name,Role,Group,Password\n\
                        year3,Year 3,pupil,year3,daffodil-2026\n\
                        mr.jones,Mr Jones,staff,,correct horse battery\n\
                        year4,Year 4,pupil,year4,primrose-2026\n";

#[tokio::test]
async fn users_commands_work_through_the_service_and_then_directly() {
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path();
        let data_set = format!("data_dir={:?}", data.display().to_string());
        let mut safegate = SafeGate::start(&[data_set.as_str()]).await;
        assert!(data.join("control.sock").exists());

        users_are_added_and_bad_additions_refused(data).await;
        the_list_shows_them_and_each_change_is_a_new_generation(data).await;
        a_user_is_removed(data).await;
        an_import_with_a_bad_row_imports_nothing_and_a_good_one_everything(data).await;
        the_service_logs_who_changed_what_but_no_secret(&safegate);

        let table_live = users_ok(data, &["list"], "").await;
        assert!(table_live.starts_with("NAME "), "{table_live}");
        assert!(
            table_live.ends_with("4 user(s), 0 disabled\n"),
            "{table_live}"
        );
        let json_live = users_ok(data, &["list", "--json"], "").await;

        safegate.terminate();
        assert!(safegate.wait().await.success());

        // Directly on the database: the same answers, and changes work too.
        assert_eq!(users_ok(data, &["list"], "").await, table_live);
        assert_eq!(users_ok(data, &["list", "--json"], "").await, json_live);
        users_ok(data, &["disable", "year3"], "").await;
        assert_eq!(user(&users_json(data).await, "year3")["disabled"], true);

        the_stored_hashes_verify_the_given_passwords(data);
    })
    .await;
}

/// `users add` through the service: a staff member with permissions and a pupil with
/// a group; an existing name (in any case), a short password and an unknown role are
/// refused.
async fn users_are_added_and_bad_additions_refused(data: &Path) {
    // add, through the service.
    let added = users_ok(
        data,
        &[
            "add",
            "Ada.Lovelace",
            "--role",
            "staff",
            "--display-name",
            "Ada Lovelace",
            "--permissions",
            "reports,rules",
            "--password-stdin",
        ],
        "analytical engine\n",
    )
    .await;
    assert_eq!(
        added,
        "added user ada.lovelace (staff, no group, permissions rules,reports)\n"
    );
    users_ok(
        data,
        &[
            "add",
            "year6",
            "--role",
            "pupil",
            "--group",
            "year6",
            "--password-stdin",
        ],
        "sunflower-2026\n",
    )
    .await;
    let unknown = users_fails(
        data,
        &[
            "add",
            "year9",
            "--role",
            "pupil",
            "--group",
            "year9",
            "--password-stdin",
        ],
        "sunflower-2026\n",
    )
    .await;
    assert!(
        unknown.contains("group `year9` is not defined in the policy (groups: reception, year1"),
        "{unknown}"
    );
    let again = users_fails(
        data,
        &["add", "ADA.LOVELACE", "--role", "staff", "--password-stdin"],
        "analytical engine\n",
    )
    .await;
    assert!(
        again.contains("user ada.lovelace exists already"),
        "{again}"
    );
    let short = users_fails(
        data,
        &["add", "bob", "--role", "pupil", "--password-stdin"],
        "short\n",
    )
    .await;
    assert!(short.contains("too short"), "{short}");
    let role = users_fails(
        data,
        &["add", "bob", "--role", "teacher", "--password-stdin"],
        "long enough\n",
    )
    .await;
    assert!(role.contains("pupil, staff or filter-admin"), "{role}");
}

/// The generation of user `name` in a `users list --json` answer.
fn generation(users: &[serde_json::Value], name: &str) -> u64 {
    user(users, name)["generation"].as_u64().unwrap()
}

/// `users list --json` shows both users with their fields; passwd, disable and enable
/// each make a new generation, and disabling twice says so.
async fn the_list_shows_them_and_each_change_is_a_new_generation(data: &Path) {
    let listed = users_json(data).await;
    assert_eq!(names(&listed), ["ada.lovelace", "year6"]);
    let ada = user(&listed, "ada.lovelace");
    assert_eq!(ada["display_name"], "Ada Lovelace");
    assert_eq!(ada["role"], "staff");
    assert!(ada["group"].is_null());
    assert_eq!(ada["permissions"], serde_json::json!(["rules", "reports"]));
    assert_eq!(ada["disabled"], false);
    assert_eq!(user(&listed, "year6")["group"], "year6");
    let g0 = generation(&listed, "year6");

    // passwd, disable, enable: each a new generation.
    let changed = users_ok(
        data,
        &["passwd", "year6", "--password-stdin"],
        "bluebell-2026\n",
    )
    .await;
    assert_eq!(changed, "changed the password of year6\n");
    let g1 = generation(&users_json(data).await, "year6");
    assert!(g1 > g0, "{g1} after {g0}");
    let disabled = users_ok(data, &["disable", "year6"], "").await;
    assert_eq!(disabled, "disabled year6: they can no longer log in\n");
    let listed = users_json(data).await;
    assert_eq!(user(&listed, "year6")["disabled"], true);
    let g2 = generation(&listed, "year6");
    assert!(g2 > g1);
    assert_eq!(
        users_ok(data, &["disable", "year6"], "").await,
        "year6 was already disabled\n"
    );
    users_ok(data, &["enable", "year6"], "").await;
    let listed = users_json(data).await;
    assert_eq!(user(&listed, "year6")["disabled"], false);
    assert!(generation(&listed, "year6") > g2);
}

/// `users remove` removes a user once; removing again is refused.
async fn a_user_is_removed(data: &Path) {
    assert_eq!(
        users_ok(data, &["remove", "ada.lovelace"], "").await,
        "removed user ada.lovelace\n"
    );
    let gone = users_fails(data, &["remove", "ada.lovelace"], "").await;
    assert!(gone.contains("there is no user ada.lovelace"), "{gone}");
    assert_eq!(names(&users_json(data).await), ["year6"]);
}

/// An import with one bad row names every problem by line and imports nothing (no
/// hashing first; a dry run says the same); a good file passes the dry run, then
/// imports every row; the same file again is refused row by row.
async fn an_import_with_a_bad_row_imports_nothing_and_a_good_one_everything(data: &Path) {
    // An import with one bad row: every problem named by line, nothing imported.
    let files = tempfile::tempdir().unwrap();
    let csv = files.path().join("users.csv");
    std::fs::write(&csv, BAD_CSV).unwrap();
    let csv_arg = csv.display().to_string();
    let report = users_fails(data, &["import", &csv_arg], "").await;
    assert!(
        report.contains("users.csv: 2 bad row(s); nothing was imported"),
        "{report}"
    );
    assert!(
        report.contains("line 3 (mr.jones): invalid role \"teacher\""),
        "{report}"
    );
    assert!(
        report.contains("line 5 (year9): group `year9` is not defined in the policy"),
        "{report}"
    );
    assert!(
        !report.contains("hashed"),
        "hashed before the check:\n{report}"
    );
    assert_eq!(names(&users_json(data).await), ["year6"]);
    let dry = users_fails(data, &["import", &csv_arg, "--dry-run"], "").await;
    assert!(dry.contains("line 3"), "{dry}");

    std::fs::write(&csv, GOOD_CSV).unwrap();
    let checked = users_ok(data, &["import", &csv_arg, "--dry-run"], "").await;
    assert_eq!(
        checked,
        "users.csv: all 3 row(s) can be imported (dry run: nothing was changed)\n"
    );
    assert_eq!(names(&users_json(data).await), ["year6"]);
    let (status, imported, stderr) = users_cmd(data, &["import", &csv_arg], "").await;
    assert!(status.success(), "{imported}{stderr}");
    assert_eq!(imported, "imported 3 user(s) from users.csv\n");
    assert!(stderr.contains("hashed 3 password(s) in"), "{stderr}");
    let listed = users_json(data).await;
    assert_eq!(names(&listed), ["mr.jones", "year3", "year4", "year6"]);
    assert_eq!(user(&listed, "mr.jones")["role"], "staff");
    assert_eq!(user(&listed, "year4")["display_name"], "Year 4");
    // The same file again: every row exists already.
    let twice = users_fails(data, &["import", &csv_arg], "").await;
    assert!(twice.contains("3 bad row(s)"), "{twice}");
    assert!(
        twice.contains("line 2 (year3): user year3 exists already"),
        "{twice}"
    );
}

/// The service logged who changed what (with the caller's uid), and never a password
/// or a hash.
fn the_service_logs_who_changed_what_but_no_secret(safegate: &SafeGate) {
    let logs = safegate.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("control: users add name=\"ada.lovelace\"")
                && l.contains("peer_uid")),
        "{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("control: users passwd name=\"year6\""))
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("users import file=\"users.csv\" rows=3")
                && l.contains("3 user(s) imported"))
    );
    for secret in ["$argon2", "analytical engine", "bluebell", "daffodil"] {
        assert!(
            !logs.iter().any(|l| l.contains(secret)),
            "the log shows {secret:?}:\n{logs:#?}"
        );
    }
}

/// The stored hashes (argon2id with the expected parameters) verify the passwords
/// that were given, the latest one only.
fn the_stored_hashes_verify_the_given_passwords(data: &Path) {
    let store = Store::open(data).unwrap();
    let year6 = store.get_user("year6").unwrap().unwrap();
    assert!(verify_password(&year6.password_hash, "bluebell-2026"));
    assert!(!verify_password(&year6.password_hash, "sunflower-2026"));
    let jones = store.get_user("Mr.Jones").unwrap().unwrap();
    assert!(verify_password(
        &jones.password_hash,
        "correct horse battery"
    ));
    assert!(
        jones
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
}

#[tokio::test]
async fn users_can_be_set_up_before_the_first_start() {
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let data = data_dir.path().join("fresh");
        // Reading needs a database...
        let none = users_fails(&data, &["list"], "").await;
        assert!(none.contains("no SafeGate database"), "{none}");
        // ...adding creates one, and says so.
        let (status, stdout, stderr) = users_cmd(
            &data,
            &[
                "add",
                "year6",
                "--role",
                "pupil",
                "--group",
                "year6",
                "--password",
                "sunflower-2026",
            ],
            "",
        )
        .await;
        assert!(status.success(), "{stdout}{stderr}");
        assert!(
            stderr.contains("created a new SafeGate database"),
            "{stderr}"
        );
        // Without --password or --password-stdin, and no terminal: a clear refusal.
        let missing = users_fails(&data, &["passwd", "year6"], "").await;
        assert!(missing.contains("--password-stdin"), "{missing}");
        let listed = users_ok(&data, &["list"], "").await;
        assert!(
            listed.contains("year6") && listed.contains("pupil"),
            "{listed}"
        );
        let update = users_ok(
            &data,
            &[
                "update",
                "year6",
                "--display-name",
                "Year 6",
                "--permissions",
                "metrics",
            ],
            "",
        )
        .await;
        assert_eq!(
            update,
            "updated year6: pupil, group year6, permissions metrics, display name \"Year 6\"\n"
        );
    })
    .await;
}

/// Run as root while SafeGate is stopped, in a data_dir that belongs to the service's
/// user, `users add` refuses (saying how to run it) rather than make a database that
/// only root could open.
#[tokio::test]
async fn root_makes_no_database_in_the_service_users_data_dir() {
    use std::os::unix::fs::chown;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: only root is refused");
        return;
    }
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown(&data, Some(65534), Some(65534)).unwrap();
        let add = [
            "add",
            "year6",
            "--role",
            "pupil",
            "--password",
            "sunflower-2026",
        ];
        let refused = users_fails(&data, &add, "").await;
        assert!(refused.contains("belongs to uid 65534"), "{refused}");
        assert!(refused.contains("sudo -u safegate"), "{refused}");
        assert!(!data.join("db").exists());
        let listed = users_fails(&data, &["list"], "").await;
        assert!(listed.contains("no SafeGate database"), "{listed}");
    })
    .await;
}

#[tokio::test]
async fn users_help_explains_names_and_the_csv_format() {
    bounded(async {
        let (status, stdout, _) = run_to_end(&["users", "--help"]).await;
        assert!(status.success());
        for word in [
            "add",
            "passwd",
            "import",
            "control.sock",
            "case-sensitive",
            "Examples:",
        ] {
            assert!(
                stdout.contains(word),
                "users --help lacks {word:?}:\n{stdout}"
            );
        }
        let (status, stdout, _) = run_to_end(&["users", "import", "--help"]).await;
        assert!(status.success());
        for word in [
            "display name",
            "password hash",
            "--dry-run",
            "line number",
            "Example file:",
        ] {
            assert!(
                stdout.contains(word),
                "users import --help lacks {word:?}:\n{stdout}"
            );
        }
        let (status, _, stderr) = run_to_end(&[
            "users",
            "add",
            "x",
            "--role",
            "pupil",
            "--password",
            "a",
            "--password-stdin",
        ])
        .await;
        assert!(!status.success());
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    })
    .await;
}
