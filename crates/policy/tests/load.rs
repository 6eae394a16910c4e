//! Loading: broken files are refused with file, line, column and key; validation
//! reports every problem; statistics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use safegate_policy::{Policy, PolicyError};

fn write(policy: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.txt"),
        "# two\na.test\nb.test\nnot a domain!\n",
    )
    .unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    (dir, path)
}

const ROLES: &str = "[roles.pupil]\n[roles.staff]\n[roles.filter-admin]\n";

#[test]
fn syntax_error_has_file_line_and_column() {
    let (_dir, path) = write("timezone = \"Europe/London\"\n[roles.pupil]\nblock = [\"a\", \n");
    let err = Policy::load(&path).unwrap_err();
    let PolicyError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*line, 3, "{err}");
    assert!(*column > 1, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:3:", path.display())),
        "{text}"
    );
}

#[test]
fn unknown_key_names_key_line_and_column() {
    let (_dir, path) = write(
        "[roles.pupil]\nsafesearch = true\n  blok = [\"gambling\"]\n[roles.staff]\n[roles.filter-admin]\n",
    );
    let err = Policy::load(&path).unwrap_err();
    let PolicyError::Schema {
        line,
        column,
        key,
        message,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*line, *column), (Some(3), Some(3)), "{err}");
    assert_eq!(key, "roles.pupil.blok", "{err}");
    assert!(message.contains("blok"), "{err}");
    assert!(
        err.to_string()
            .contains(":3:3: key `roles.pupil.blok`: unknown field `blok`"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let (_dir, path) = write(&format!(
        "{ROLES}[[unblocks]]\nsite = \"a.test\"\nrole = \"pupil\"\nuntil = 5\n"
    ));
    let err = Policy::load(&path).unwrap_err();
    let PolicyError::Schema { line, key, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(key, "unblocks[0].until", "{err}");
    assert_eq!(*line, Some(7), "{err}");
    let (_dir, path) = write(&format!("{ROLES}[windows.w]\ndays = \"mon-fri\"\n"));
    let err = Policy::load(&path).unwrap_err();
    assert!(err.to_string().contains("key `windows.w.days`"), "{err}");
    let (_dir, path) =
        write("[roles.pupil]\nyoutube = \"very\"\n[roles.staff]\n[roles.filter-admin]\n");
    let err = Policy::load(&path).unwrap_err();
    assert!(
        err.to_string().contains(":2:11: key `roles.pupil.youtube`"),
        "{err}"
    );
}

#[test]
fn validation_reports_every_problem_with_its_key_and_line() {
    let policy = r#"timezone = "Europe/Londres"
default_role = "guest"

[categories.ok]
sources = [{ format = "domains", path = "ok.txt" }]
[categories.missing]
sources = [{ format = "domains", path = "lists/missing.txt" }]
[categories.locked]
locked = true
sites = ["bad host!"]

[windows.w]
days = ["mon-fri", "funday"]
times = ["15:30-08:30", "09:00-12:00", "11:00-13:00"]
terms_only = true

[calendar]
terms = [{ from = "2026-09-01", until = "2026-08-01" }]

[roles.pupil]
block = ["ok", "nope", { category = "ok", windows = ["nowin"] }]

[roles.pupil.groups.year6]
lift = ["locked"]

[roles.staff.groups.year6]

[roles.teacher]

[[unblocks]]
category = "locked"
role = "pupil"
until = "soon"
"#;
    let (dir, path) = write(policy);
    let err = Policy::load(&path).unwrap_err();
    let PolicyError::Invalid { problems, .. } = &err else {
        panic!("{err:?}")
    };
    let text = err.to_string();
    let expect = [
        ("timezone", "Europe/Londres"),
        ("default_role", "unknown role `guest`"),
        (
            "categories.missing.sources[0].path",
            "missing.txt does not exist",
        ),
        ("categories.locked.sites[0]", "bad host!"),
        ("windows.w.days[1]", "funday"),
        ("windows.w.times[0]", "ends before it starts"),
        ("windows.w.times[2]", "overlaps windows.w.times[1]"),
        ("windows.w.terms_only", "needs term dates"),
        ("calendar.terms[0]", "`until` is before `from`"),
        ("roles.pupil.block[1]", "unknown category `nope`"),
        ("roles.pupil.block[2].windows[0]", "unknown window `nowin`"),
        ("roles.pupil.groups.year6.lift[0]", "locked category"),
        ("roles.staff.groups.year6", "group names must be unique"),
        ("roles.teacher", "unknown role `teacher`"),
        ("roles.filter-admin", "is not defined"),
        ("unblocks[0].category", "can never be unblocked"),
        ("unblocks[0].until", "`soon` is not a time"),
    ];
    for (key, message) in expect {
        assert!(
            problems
                .iter()
                .any(|p| p.key == key && p.message.contains(message)),
            "missing {key}: {message}\n{text}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{text}");
    // The missing list is named by its full path.
    assert!(
        text.contains(&dir.path().join("lists/missing.txt").display().to_string()),
        "{text}"
    );
    // Lines are found for keys that are written in the file.
    let line_of = |key: &str| problems.iter().find(|p| p.key == key).and_then(|p| p.line);
    assert_eq!(line_of("timezone"), Some(1));
    assert_eq!(line_of("windows.w.days[1]"), Some(13));
    assert_eq!(line_of("roles.pupil.block[2].windows[0]"), Some(21));
    assert_eq!(line_of("unblocks[0].until"), Some(33));
    assert_eq!(line_of("roles.filter-admin"), None);
    assert!(text.contains("line 13: windows.w.days[1]: "), "{text}");
}

#[test]
fn unreadable_file_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Policy::load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }), "{err:?}");
}

#[test]
fn load_statistics() {
    let (_dir, path) = write(&format!(
        "[categories.ok]\nsources = [{{ format = \"domains\", path = \"ok.txt\" }}]\nsites = [\"c.test\", \"d.test/x\"]\n{ROLES}"
    ));
    let s = Policy::load(&path).unwrap();
    let stats = s.stats();
    assert_eq!(stats.categories.len(), 1);
    let c = &stats.categories[0];
    assert_eq!((c.domains, c.urls, c.skipped), (3, 1, 1), "{c:?}");
    // The category, and the hosts its URL entry names (decrypt.path_rules).
    assert_eq!(stats.lists, 2);
    assert!(stats.index_entries >= 4, "{stats:?}");
    assert!(stats.compile_time.as_secs() < 5);
    assert_eq!(s.category_names().collect::<Vec<_>>(), vec!["ok"]);
}

#[test]
fn toml_dates_and_times_may_be_bare() {
    let (_dir, path) = write(&format!(
        "{ROLES}[calendar]\nterms = [{{ from = 2026-09-02, until = 2026-12-18 }}]\n\
         [[unblocks]]\nsite = \"a.test\"\nrole = \"pupil\"\nfrom = 2026-11-23T14:30:00\nuntil = 2026-11-23T15:30:00Z\n"
    ));
    Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn list_files_are_screened_against_the_list_in_force() {
    use safegate_policy::{ListChecks, Refusal};
    let (dir, path) = write(&format!(
        "[categories.ok]\nsources = [{{ format = \"domains\", path = \"ok.txt\" }}]\n{ROLES}"
    ));
    let list = dir.path().join("ok.txt");
    let many: String = (0..20).map(|i| format!("site{i}.test\n")).collect();
    std::fs::write(&list, &many).unwrap();
    let checks = ListChecks::default();
    let in_force = Policy::load_screened(&path, None, checks).unwrap();
    assert_eq!(in_force.stats().list_files[0].entries, 20);

    // Cut to 10 %: refused against the list in force, not on its own.
    let cut: String = many.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&list, &cut).unwrap();
    Policy::load(&path).unwrap();
    let err = Policy::load_screened(&path, Some(in_force.stats()), checks).unwrap_err();
    let PolicyError::ListsRefused { refusals, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(refusals[0].category, "ok");
    assert_eq!(refusals[0].file, list);
    assert!(matches!(
        refusals[0].reason,
        Refusal::Shrunk {
            before: 20,
            after: 2,
            ..
        }
    ));
    assert!(
        err.to_string().contains("shrank from 20 to 2 entries"),
        "{err}"
    );
    let off = ListChecks {
        max_shrink_percent: 100,
    };
    Policy::load_screened(&path, Some(in_force.stats()), off).unwrap();

    // Binary garbage: refused even at first load, with the file named.
    let mut garbage = many.into_bytes();
    garbage.extend((0..=255u8).cycle().take(2000));
    std::fs::write(&list, &garbage).unwrap();
    let err = Policy::load(&path).unwrap_err();
    assert!(matches!(&err, PolicyError::ListsRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("list `ok`") && text.contains("holds binary data"),
        "{text}"
    );
}

#[test]
fn optional_sources_are_skipped_while_missing() {
    let policy = format!(
        "[categories.ok]\nsources = [\n  {{ format = \"domains\", path = \"ok.txt\" }},\n  \
         {{ format = \"ut1\", path = \"feeds/ut1/adult\", optional = true }},\n  \
         {{ format = \"domains\", path = \"later.txt\", optional = true }},\n]\n{ROLES}"
    );
    let (dir, path) = write(&policy);
    let s = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let stats = s.stats();
    assert_eq!(stats.categories[0].optional_missing, 2, "{stats:?}");
    assert_eq!(stats.categories[0].domains, 2, "{stats:?}");
    assert_eq!(
        stats.optional_missing,
        vec![
            dir.path().join("feeds/ut1/adult"),
            dir.path().join("later.txt")
        ]
    );
    // Missing lists are neither read nor watched.
    assert_eq!(stats.files, vec![dir.path().join("ok.txt")]);

    // Once they appear, the same policy reads them.
    let folder = dir.path().join("feeds/ut1/adult");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("domains"), "ut1-only.test\n").unwrap();
    std::fs::write(dir.path().join("later.txt"), "later.test\n").unwrap();
    let s = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = &s.stats().categories[0];
    assert_eq!((c.domains, c.optional_missing), (4, 0), "{c:?}");
    assert!(s.stats().optional_missing.is_empty());
    assert_eq!(s.stats().files.len(), 3);
}

#[test]
fn optional_sources_that_are_broken_are_refused() {
    // A UT1 source that is a file, not a folder.
    let (dir, path) = write(&format!(
        "[categories.ok]\nsources = [{{ format = \"ut1\", path = \"ok.txt\", optional = true }}]\n{ROLES}"
    ));
    let err = Policy::load(&path).unwrap_err();
    let PolicyError::Invalid { problems, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems[0].key, "categories.ok.sources[0].path", "{err}");

    // Binary garbage in an optional list: refused by screening as any list is.
    let mut garbage = b"a.test\n".to_vec();
    garbage.extend((0..=255u8).cycle().take(2000));
    std::fs::write(dir.path().join("ok.txt"), &garbage).unwrap();
    std::fs::write(
        &path,
        format!(
            "[categories.ok]\nsources = [{{ format = \"domains\", path = \"ok.txt\", optional = true }}]\n{ROLES}"
        ),
    )
    .unwrap();
    let err = Policy::load(&path).unwrap_err();
    assert!(matches!(&err, PolicyError::ListsRefused { .. }), "{err:?}");

    // A required list that is missing is still a mistake.
    std::fs::write(
        &path,
        format!(
            "[categories.ok]\nsources = [{{ format = \"domains\", path = \"gone.txt\" }}]\n{ROLES}"
        ),
    )
    .unwrap();
    let err = Policy::load(&path).unwrap_err();
    assert!(err.to_string().contains("gone.txt does not exist"), "{err}");
}

#[test]
fn a_locked_category_cannot_be_background_traffic() {
    let (_dir, path) = write(&format!(
        "{ROLES}[categories.quiet]\nlocked = true\nbackground = true\nsites = [\"a.test\"]\n"
    ));
    let err = Policy::load(&path).unwrap_err().to_string();
    assert!(err.contains("categories.quiet.background"), "{err}");
}

#[test]
fn groups_and_site_groups_are_checked_in_words() {
    let base = r#"[roles.pupil]
block = ["games"]
[roles.staff]
[roles.filter-admin]
[categories.games]
sites = ["games.test"]
[site_groups.health]
sites = ["nhs.test"]
[groups.year6]
role = "pupil"
description = "Year 6"
addresses = ["10.0.6.0/24"]
teachers = ["mr.jones"]
[teaching]
lesson_minutes = 50
max_minutes = 90
"#;
    let (_dir, path) = write(base);
    let snapshot = Policy::load(&path).unwrap();
    let year6 = snapshot.group("year6").unwrap();
    assert_eq!(year6.role.as_str(), "pupil");
    assert_eq!(year6.description, "Year 6");
    assert_eq!(year6.teachers, ["mr.jones"]);
    assert_eq!(
        snapshot
            .group_for_address("10.0.6.42".parse().unwrap())
            .map(|g| g.name.as_str()),
        Some("year6")
    );
    assert!(
        snapshot
            .group_for_address("10.0.7.1".parse().unwrap())
            .is_none()
    );
    assert_eq!(snapshot.teaching().lesson_minutes, 50);
    let health = snapshot
        .stats()
        .categories
        .iter()
        .find(|c| c.name == "health")
        .unwrap();
    assert!(health.site_group);

    // A site group cannot be blocked or unblocked; a bad range and an unknown role
    // are named.
    let broken = base.replace("block = [\"games\"]", "block = [\"games\", \"health\"]")
        + "[groups.year5]\nrole = \"teacher\"\n[groups.year4]\nrole = \"pupil\"\naddresses = [\"10.0.6\"]\n\
           [[unblocks]]\ncategory = \"health\"\nrole = \"pupil\"\nuntil = \"2026-01-01 10:00\"\n";
    let (_dir, path) = write(&broken);
    let err = Policy::load(&path).unwrap_err();
    let text = err.to_string();
    for expected in [
        "roles.pupil.block[1]: `health` is a site group",
        "groups.year5.role: unknown role `teacher`",
        "groups.year4.addresses[0]: `10.0.6` is not an address",
        "unblocks[0].category: `health` is a site group",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}
