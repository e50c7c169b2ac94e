//! A store the user may only read, or not read at all: read verbs work on a store they may
//! only read (they need no lock, no write and no secret key), and every refusal of the
//! operating system is reported as a permission problem naming the path, never as a corrupt,
//! damaged, locked or missing store.
//!
//! Root ignores file modes, so when the tests run as root (the test machine and CI do) the
//! commands under test run as uid/gid 65534 through `setpriv`, from a copy of the binary in a
//! directory everyone may enter (`/root` is mode 700); otherwise they run as the current
//! user, for whom the modes bind as well. Both ways assert the same things.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{json_lines, one_line_error, output_within_a_minute, run};

/// The uid and gid the commands run as when the tests run as root.
const NOBODY: u32 = 65534;

/// Who runs the commands under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum User {
    /// The tests run as root: the commands run as [`NOBODY`], the store stays root's.
    Nobody,
    /// The tests run as an ordinary user, who owns the store and runs the commands itself.
    Me,
}

impl User {
    fn current() -> User {
        let id = Command::new("id").arg("-u").output().expect("`id -u` runs");
        if String::from_utf8_lossy(&id.stdout).trim() != "0" {
            return User::Me;
        }
        let setpriv = Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            setpriv.is_ok_and(|status| status.success()),
            "the tests run as root, for whom file modes do not bind: they need `setpriv` (util-linux) to run the commands as uid {NOBODY}"
        );
        User::Nobody
    }

    /// The mode that keeps this user out of a directory or file while its owner keeps
    /// access (the owner itself is kept out too when it is this user).
    fn private_mode(self, is_dir: bool) -> u32 {
        match (self, is_dir) {
            (User::Nobody, true) => 0o700,
            (User::Nobody, false) => 0o600,
            (User::Me, _) => 0o000,
        }
    }
}

/// A directory everyone may enter, holding a copy of the binary and one store created (by
/// the tests' own user, with every permission) with two blocks.
struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
    store: PathBuf,
    user: User,
}

impl Sandbox {
    fn new() -> Sandbox {
        let user = User::current();
        let base = std::env::temp_dir();
        let base = if user == User::Me || world_searchable(&base) {
            base
        } else {
            PathBuf::from("/tmp")
        };
        let dir = tempfile::tempdir_in(base).expect("a temp dir");
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("blockend");
        let built = Path::new(env!("CARGO_BIN_EXE_blockend"));
        // A hard link when the temp dir shares the target's file system: the binary is large.
        if fs::hard_link(built, &bin).is_err() {
            fs::copy(built, &bin).expect("copy the binary");
        }
        chmod(&bin, 0o755);
        let store = dir.path().join("store");
        for args in [
            vec!["init", "--store", s(&store)],
            vec!["append", "--store", s(&store), r#"{"value":1}"#],
            vec!["append", "--store", s(&store), r#"{"value":2}"#],
        ] {
            let output = run(&args);
            assert!(output.status.success(), "{args:?}: {output:?}");
        }
        Sandbox {
            dir,
            bin,
            store,
            user,
        }
    }

    /// Runs `blockend ARGS` as the user under test (at most a minute).
    fn run_as_user(&self, args: &[&str]) -> Output {
        let mut command = match self.user {
            User::Nobody => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={NOBODY}"))
                    .arg(format!("--regid={NOBODY}"))
                    .arg("--clear-groups")
                    .arg(&self.bin);
                command
            }
            User::Me => Command::new(&self.bin),
        };
        let child = command
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,libp2p=warn,libp2p_gossipsub=error")
            // A permission problem taken for another process's lock would wait this long.
            .env("BLOCKEND_LOCK_TIMEOUT_MS", "200")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        output_within_a_minute(child, args)
    }

    /// Every directory of the store `dir_mode`, every file `file_mode`.
    fn chmod_store(&self, dir_mode: u32, file_mode: u32) {
        walk(&self.store, &mut |path, is_dir| {
            chmod(path, if is_dir { dir_mode } else { file_mode })
        });
    }

    /// Keeps the user under test out of `path`.
    fn hide(&self, path: &Path) {
        chmod(path, self.user.private_mode(path.is_dir()));
    }

    /// Makes the whole store writable by the user under test.
    fn give_store_to_user(&self) {
        if self.user == User::Nobody {
            walk(&self.store, &mut |path, _| {
                std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("chown")
            });
        }
    }

    /// stdout of `blockend VERB --store STORE` run with every permission, before any change.
    fn owner_reads(&self) -> Vec<(&'static str, Vec<u8>)> {
        ["cat", "state", "stats"]
            .into_iter()
            .map(|verb| {
                let output = run(&[verb, "--store", s(&self.store)]);
                assert!(output.status.success(), "{verb}: {output:?}");
                (verb, output.stdout)
            })
            .collect()
    }

    /// Asserts that the read verbs, run as the user under test, print what `expected` holds.
    fn assert_reads(&self, expected: &[(&'static str, Vec<u8>)]) {
        for (verb, stdout) in expected {
            let output = self.run_as_user(&[verb, "--store", s(&self.store)]);
            assert!(output.status.success(), "{verb}: {output:?}");
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(stdout),
                "{verb} prints what it prints for the owner"
            );
            assert!(output.stderr.is_empty(), "{verb}: {output:?}");
        }
        let cat = self.run_as_user(&["cat", "--store", s(&self.store)]);
        let bodies: Vec<_> = json_lines(&cat).iter().map(|b| b["body"].clone()).collect();
        assert_eq!(
            bodies,
            [
                serde_json::json!({"value": 1}),
                serde_json::json!({"value": 2})
            ]
        );
        let stats = self.run_as_user(&["stats", "--store", s(&self.store)]);
        assert_eq!(json_lines(&stats)[0]["blocks_stored"], 2);
    }

    /// Runs `append` as the user under test.
    fn append(&self) -> Output {
        self.run_as_user(&["append", "--store", s(&self.store), r#"{"value":3}"#])
    }

    /// The store's blocks, read with every permission.
    fn blocks(&self) -> usize {
        let output = run(&["cat", "--store", s(&self.store)]);
        assert!(output.status.success(), "{output:?}");
        json_lines(&output).len()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Modes that keep the owner out too would stop the temp dir's removal.
        if self.store.exists() {
            chmod(&self.store, 0o755);
            walk(&self.store, &mut |path, is_dir| {
                chmod(path, if is_dir { 0o755 } else { 0o644 })
            });
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Calls `visit` on every directory and file under `root`, `root` included, parents first.
fn walk(root: &Path, visit: &mut dyn FnMut(&Path, bool)) {
    let is_dir = root.is_dir();
    visit(root, is_dir);
    if is_dir {
        // Listed after the visit, which may have made the directory readable.
        if let Ok(entries) = fs::read_dir(root) {
            for entry in entries {
                walk(&entry.expect("a directory entry").path(), visit);
            }
        }
    }
}

/// Whether every directory from `/` to `path` lets everyone through.
fn world_searchable(path: &Path) -> bool {
    path.ancestors()
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Asserts that `output` is a failure with one line on stderr saying that the operating
/// system refused to let the user `access` ("read" or "write") a path inside `store`, and
/// nothing else is blamed; returns that path.
fn assert_permission_denied(output: &Output, access: &str, store: &Path) -> PathBuf {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = one_line_error(output);
    assert!(line.starts_with("blockend: "), "{line}");
    let prefix = format!("blockend: cannot {access} ");
    let path = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once(": permission denied ("))
        .map(|(path, _)| PathBuf::from(path))
        .unwrap_or_else(|| panic!("not `{prefix}PATH: permission denied (...)`: {line}"));
    assert!(
        path.starts_with(store),
        "the refused path {} is in the store {}: {line}",
        path.display(),
        store.display()
    );
    assert!(line.contains("run as its owner"), "{line}");
    let lower = line.to_lowercase();
    for wrong in [
        "corrupt", "damaged", "locked", "no store", "missing", "os error",
    ] {
        assert!(!lower.contains(wrong), "says {wrong:?}: {line}");
    }
    path
}

#[test]
fn a_store_the_user_may_only_read_serves_every_read_and_refuses_append() {
    let sandbox = Sandbox::new();
    let expected = sandbox.owner_reads();
    sandbox.chmod_store(0o555, 0o444);
    sandbox.assert_reads(&expected);
    let path = assert_permission_denied(&sandbox.append(), "write", &sandbox.store);
    assert!(
        path.starts_with(sandbox.store.join("db")),
        "the refused file is the database's: {}",
        path.display()
    );
    sandbox.chmod_store(0o755, 0o644);
    assert_eq!(sandbox.blocks(), 2, "the refused append wrote nothing");
}

#[test]
fn a_store_directory_the_user_may_not_enter_fails_every_verb_naming_what_it_could_not_read() {
    let sandbox = Sandbox::new();
    sandbox.hide(&sandbox.store);
    for verb in ["cat", "state", "stats", "peers"] {
        let output = sandbox.run_as_user(&[verb, "--store", s(&sandbox.store)]);
        let path = assert_permission_denied(&output, "read", &sandbox.store);
        assert_eq!(path, sandbox.store.join("app"), "{verb}");
    }
    // Not "no store": the store is there, this user may not look.
    let path = assert_permission_denied(&sandbox.append(), "read", &sandbox.store);
    assert_eq!(path, sandbox.store.join("app"));
}

#[test]
fn database_files_the_user_may_not_read_fail_reads_naming_the_file() {
    let sandbox = Sandbox::new();
    let db = sandbox.store.join("db");
    let files: Vec<PathBuf> = fs::read_dir(&db)
        .expect("the database directory")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    for file in &files {
        sandbox.hide(file);
    }
    for verb in ["cat", "state", "stats"] {
        let output = sandbox.run_as_user(&[verb, "--store", s(&sandbox.store)]);
        let path = assert_permission_denied(&output, "read", &sandbox.store);
        assert!(files.contains(&path), "{verb} names {}", path.display());
    }
    let path = assert_permission_denied(&sandbox.append(), "read", &sandbox.store);
    assert!(files.contains(&path), "append names {}", path.display());
}

#[test]
fn a_table_file_the_user_may_not_read_is_named_in_the_read_s_error() {
    // RocksDB reports this refusal itself, as text ("While open a file for random read: ...:
    // Permission denied").
    let sandbox = Sandbox::new();
    let tables: Vec<PathBuf> = fs::read_dir(sandbox.store.join("db"))
        .expect("the database directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert!(
        !tables.is_empty(),
        "the store has table files (reopening flushes)"
    );
    for table in &tables {
        sandbox.hide(table);
    }
    for verb in ["cat", "state", "stats"] {
        let output = sandbox.run_as_user(&[verb, "--store", s(&sandbox.store)]);
        let path = assert_permission_denied(&output, "read", &sandbox.store);
        assert!(tables.contains(&path), "{verb} names {}", path.display());
    }
}

#[test]
fn a_store_whose_identity_alone_is_unreadable_serves_reads_and_refuses_append() {
    let sandbox = Sandbox::new();
    let expected = sandbox.owner_reads();
    // Everything but the identity is the user's: only the identity stands in append's way.
    sandbox.give_store_to_user();
    let identity = sandbox.store.join("identity");
    if sandbox.user == User::Nobody {
        std::os::unix::fs::chown(&identity, Some(0), Some(0)).expect("chown");
    }
    sandbox.hide(&identity);
    sandbox.assert_reads(&expected);
    let output = sandbox.append();
    let path = assert_permission_denied(&output, "read", &sandbox.store);
    assert_eq!(path, identity, "{output:?}");
    chmod(&identity, 0o600);
    assert_eq!(sandbox.blocks(), 2, "the refused append wrote no block");
}
