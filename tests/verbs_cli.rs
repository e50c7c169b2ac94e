//! The everyday verbs: `id`, `head`, `get`, `export`/`import`, `cat --since`/`--by-feed`,
//! `apps`, the `BLOCKEND_STORE` default and the one `state` shape, each on its happy path and
//! on bad input (one line on stderr, a non-zero exit, the store as it was). Offline reads show
//! the store as of now (expired messages gone) without writing to it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use blockend::archive::{Totals, Writer};
use blockend::kernel::store::RocksStore;
use blockend::kernel::{BlockId, BlockStore, Feed, Identity};
use common::{blockend, eventually, json_lines, one_line_error, run, NodeProcess};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(args: &[&str]) -> Vec<serde_json::Value> {
    let output = run(args);
    assert!(output.status.success(), "{args:?}: {output:?}");
    json_lines(&output)
}

fn init(store: &Path, app: &str) -> String {
    ok(&["init", "--store", s(store), "--app", app])[0]["author"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn append(store: &Path, body: &str) -> serde_json::Value {
    ok(&["append", "--store", s(store), body]).remove(0)
}

/// A feed of `n` counter blocks by the author of `secret`, the i-th at `times[i]` with value
/// `values[i]` (signed directly: no slice judged them).
fn counter_feed(secret: u8, times: &[u64], values: &[u64]) -> Feed {
    let identity = Identity::from_secret([secret; 32]);
    let mut feed = Feed::new();
    for (time, value) in times.iter().zip(values) {
        feed.append(
            &identity,
            format!("{{\"value\": {value}}}").into_bytes(),
            *time,
        );
    }
    feed
}

fn author_of(secret: u8) -> String {
    Identity::from_secret([secret; 32]).public().to_hex()
}

/// An archive file holding `feeds` and `proofs`.
fn archive(path: &Path, feeds: &[Feed], proofs: &[(Feed, usize, Feed, usize)]) {
    let mut bytes = Vec::new();
    let mut writer = Writer::new(&mut bytes, Totals::default()).unwrap();
    for feed in feeds {
        writer.feed(feed).unwrap();
    }
    for (a, i, b, j) in proofs {
        writer.proof(&a.blocks()[*i], &b.blocks()[*j]).unwrap();
    }
    writer.finish().unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn import(store: &Path, file: &Path) -> serde_json::Value {
    ok(&["import", "--store", s(store), s(file)]).remove(0)
}

fn ids(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn id_names_the_author_and_its_peer_id_offline_and_through_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let author = init(&store, "counter");
    let offline = ok(&["id", "--store", s(&store)]).remove(0);
    assert_eq!(offline["author"], author.as_str());
    let peer = offline["peer"].as_str().unwrap().to_owned();
    assert!(peer.starts_with("12D3KooW"), "{peer}");

    let node = NodeProcess::start(&store, &[]);
    assert!(
        node.addr.ends_with(&format!("/p2p/{peer}")),
        "{}",
        node.addr
    );
    let online = ok(&["id", "--store", s(&store)]).remove(0);
    assert_eq!(online, offline);
    // A request with a field this node does not know (a newer client) is refused, not
    // answered as if the field were absent.
    {
        use std::io::Write;
        let stream = std::os::unix::net::UnixStream::connect(store.join("node.sock")).unwrap();
        writeln!(&stream, r#"{{"op":"head","author":null,"newer":true}}"#).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert!(
            line.contains("bad request") && line.contains("unknown field"),
            "{line}"
        );
    }
    node.stop();

    let line = one_line_error(&run(&["id", "--store", s(&dir.path().join("none"))]));
    assert!(line.contains("no store at"), "{line}");
}

#[test]
fn peers_and_stats_name_each_peers_author() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let author_a = init(&a, "counter");
    init(&b, "counter");
    let node_a = NodeProcess::start(&a, &[]);
    let node_b = NodeProcess::start(&b, &["--peer", &node_a.addr]);
    let peer_a = ok(&["id", "--store", s(&a)]).remove(0)["peer"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = eventually(Duration::from_secs(30), || {
        let peers = ok(&["peers", "--store", s(&b)]);
        peers.into_iter().find(|p| p["peer"] == peer_a.as_str())
    })
    .expect("b lists a among its peers");
    assert_eq!(listed["author"], author_a.as_str(), "{listed}");
    append(&a, r#"{"value": 1}"#);
    let stats = eventually(Duration::from_secs(30), || {
        let stats = ok(&["stats", "--store", s(&b)]).remove(0);
        stats["peers"].get(&peer_a).is_some().then_some(stats)
    })
    .expect("b's stats count traffic with a");
    assert_eq!(stats["peers"][&peer_a]["author"], author_a.as_str());
    node_b.stop();
    node_a.stop();
}

#[test]
fn head_and_get_show_each_block_with_its_status_and_refuse_bad_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let author = init(&store, "counter");
    append(&store, r#"{"value": 1}"#);
    let second = append(&store, r#"{"value": 2}"#);
    let heads = ok(&["head", "--store", s(&store)]);
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0]["id"], second["id"]);
    assert_eq!(heads[0]["seq"], 1);
    assert_eq!(heads[0]["status"], "counted");
    let mine = ok(&["head", "--store", s(&store), "--author", &author]);
    assert_eq!(ids(&mine), ids(&heads));
    assert!(ok(&["head", "--store", s(&store), "--author", &author_of(9)]).is_empty());
    let line = one_line_error(&run(&["head", "--store", s(&store), "--author", "zz"]));
    assert!(line.contains("not hex"), "{line}");

    // Another author's feed whose second block goes down: the counter rejects it, and the
    // store keeps it, rejected, with the slice's reason.
    let feed = counter_feed(7, &[1_000, 2_000], &[5, 3]);
    let file = dir.path().join("rejected.feeds");
    archive(&file, std::slice::from_ref(&feed), &[]);
    let report = import(&store, &file);
    assert_eq!(
        (&report["accepted"], &report["rejected"]),
        (&1.into(), &1.into())
    );
    let rejected = feed.blocks()[1].id().to_hex();
    let got = ok(&["get", &rejected, "--store", s(&store)]).remove(0);
    assert_eq!(got["status"], "rejected", "{got}");
    assert_eq!(got["counted"], false);
    assert_eq!(got["slice"], "counter");
    assert!(
        got["reason"].as_str().unwrap().contains("does not exceed"),
        "{got}"
    );
    let got = ok(&["get", second["id"].as_str().unwrap(), "--store", s(&store)]).remove(0);
    assert_eq!(
        (&got["status"], &got["counted"]),
        (&"counted".into(), &true.into())
    );

    let unknown = BlockId([0xab; 32]).to_hex();
    let line = one_line_error(&run(&["get", &unknown, "--store", s(&store)]));
    assert!(
        line.contains("no block") && line.contains(&unknown),
        "{line}"
    );
    let line = one_line_error(&run(&["get", "abc", "--store", s(&store)]));
    assert!(line.contains("block id"), "{line}");

    // The same through a running node.
    let node = NodeProcess::start(&store, &[]);
    let got = ok(&["get", &rejected, "--store", s(&store)]).remove(0);
    assert_eq!(got["status"], "rejected");
    assert_eq!(ok(&["head", "--store", s(&store)]).len(), 2);
    let line = one_line_error(&run(&["get", &unknown, "--store", s(&store)]));
    assert!(line.contains("no block"), "{line}");
    node.stop();
}

#[test]
fn offline_reads_hide_expired_messages_without_writing_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "chat");
    let gone = append(&store, r#"{"room": "lobby", "text": "brief", "ttl_ms": 1}"#);
    let kept = append(
        &store,
        r#"{"room": "lobby", "text": "stays", "ttl_ms": 3600000}"#,
    );
    // The 1 ms lifetime is over as soon as the clock moves past it.
    let state = eventually(Duration::from_secs(10), || {
        let state = ok(&["state", "--store", s(&store)]).remove(0);
        (state["state"]["rooms"]["lobby"].as_array()?.len() == 1).then_some(state)
    })
    .expect("the brief message expires from the offline view");
    let lobby = state["state"]["rooms"]["lobby"].as_array().unwrap();
    assert_eq!(lobby.len(), 1, "{state}");
    assert_eq!(lobby[0]["text"], "stays");
    let listed = ok(&["cat", "--store", s(&store)]);
    assert_eq!(ids(&listed), ids(&[gone.clone(), kept.clone()]));
    assert!(listed[0]["body"].is_null(), "{}", listed[0]);
    assert_eq!(listed[1]["body"]["text"], "stays");
    let got = ok(&["get", gone["id"].as_str().unwrap(), "--store", s(&store)]).remove(0);
    assert_eq!(got["status"], "collected");

    // Nothing was written: the store still holds the expired body.
    let id = blockend::api::parse_block_id(gone["id"].as_str().unwrap()).unwrap();
    let stored = RocksStore::open_read_only(&store).unwrap();
    assert!(stored.get(&id).unwrap().unwrap().body().is_some());
}

#[test]
fn export_then_import_moves_every_feed_verified_offline_and_through_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let author_a = init(&a, "counter");
    init(&b, "counter");
    init(&c, "counter");
    for value in 1..=3 {
        append(&a, &format!(r#"{{"value": {value}}}"#));
    }
    let file = dir.path().join("a.feeds");
    let output = run(&["export", "--store", s(&a)]);
    assert!(output.status.success(), "{output:?}");
    std::fs::write(&file, &output.stdout).unwrap();
    let told = String::from_utf8_lossy(&output.stderr);
    assert!(told.contains("1 feeds, 3 blocks"), "{told}");

    let report = import(&b, &file);
    assert_eq!(report["offered"], 3, "{report}");
    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(report["complete"], true);
    assert_eq!(ok(&["state", "--store", s(&b)])[0]["state"]["total"], 3);
    let again = import(&b, &file);
    assert_eq!(
        (&again["accepted"], &again["already_had"]),
        (&0.into(), &3.into())
    );

    // Through running nodes: an export equals the offline one, an import lands in the node.
    let node_a = NodeProcess::start(&a, &[]);
    let output = run(&["export", "--store", s(&a), "--author", &author_a]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, std::fs::read(&file).unwrap());
    node_a.stop();
    let node_c = NodeProcess::start(&c, &[]);
    let report = import(&c, &file);
    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(ok(&["state", "--store", s(&c)])[0]["state"]["total"], 3);
    node_c.stop();

    // Bad input: the store is left as it was.
    let line = one_line_error(&run(&["export", "--store", s(&a), "--author", "nope"]));
    assert!(line.contains("not hex"), "{line}");
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"these are not feeds").unwrap();
    let line = one_line_error(&run(&["import", "--store", s(&b), s(&junk)]));
    assert!(line.contains("not a blockend feed archive"), "{line}");
    let line = one_line_error(&run(&[
        "import",
        "--store",
        s(&b),
        s(&dir.path().join("none")),
    ]));
    assert!(line.contains("cannot open"), "{line}");
    assert_eq!(ok(&["cat", "--store", s(&b)]).len(), 3);
}

#[test]
fn import_verifies_every_block_keeps_what_came_before_damage_and_takes_fork_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    // A forged block: its body changed after signing.
    let good = counter_feed(3, &[1_000], &[1]);
    let mut forged = good.blocks()[0].encode();
    let at = forged.len() - 2;
    forged[at] ^= 1;
    let forged = blockend::kernel::Block::decode(&forged).unwrap();
    let file = dir.path().join("forged.feeds");
    archive(&file, &[Feed::from_blocks(vec![forged]).unwrap()], &[]);
    let report = import(&store, &file);
    assert_eq!(report["invalid"], 1, "{report}");
    assert!(ok(&["cat", "--store", s(&store)]).is_empty());

    // A block far over any body limit is refused without being sent anywhere.
    let mut huge = Feed::new();
    huge.append(&Identity::from_secret([8; 32]), vec![b'x'; 2 << 20], 1_000);
    let file = dir.path().join("huge.feeds");
    archive(&file, &[huge], &[]);
    let report = import(&store, &file);
    assert_eq!(
        (&report["offered"], &report["invalid"]),
        (&1.into(), &1.into())
    );

    // A fork: the author signs two blocks at seq 1. The proof freezes the feed.
    let one = counter_feed(4, &[1_000, 2_000], &[1, 2]);
    let mut other = Feed::from_blocks(vec![one.blocks()[0].clone()]).unwrap();
    other.append(
        &Identity::from_secret([4; 32]),
        b"{\"value\": 9}".to_vec(),
        3_000,
    );
    let file = dir.path().join("fork.feeds");
    archive(
        &file,
        std::slice::from_ref(&one),
        &[(one.clone(), 1, other, 1)],
    );
    let report = import(&store, &file);
    assert_eq!(report["forks"], 1, "{report}");
    assert_eq!(report["proofs"], 1);
    let heads = ok(&["head", "--store", s(&store), "--author", &author_of(4)]);
    assert_eq!(heads[0]["frozen_at"], 1, "{heads:?}");

    // A file cut short: what came before the cut is imported, the rest is reported.
    let long = counter_feed(5, &[1_000, 2_000, 3_000], &[1, 2, 3]);
    let file = dir.path().join("cut.feeds");
    archive(&file, &[counter_feed(6, &[1_000], &[1]), long], &[]);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 20]).unwrap();
    let output = run(&["import", "--store", s(&store), s(&file)]);
    assert!(!output.status.success());
    let report = json_lines(&output).remove(0);
    assert_eq!(
        (&report["accepted"], &report["complete"]),
        (&1.into(), &false.into())
    );
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("ends early"), "{error}");
    assert_eq!(
        ok(&["head", "--store", s(&store), "--author", &author_of(6)]).len(),
        1
    );
}

#[test]
fn cat_orders_by_time_resumes_after_since_and_by_feed_keeps_feed_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    let x = counter_feed(1, &[1_000, 3_000], &[1, 2]);
    let y = counter_feed(2, &[2_000, 4_000], &[1, 2]);
    let file = dir.path().join("xy.feeds");
    archive(&file, &[x.clone(), y.clone()], &[]);
    assert_eq!(import(&store, &file)["accepted"], 4);
    let [x0, x1] = [0, 1].map(|i| x.blocks()[i].id().to_hex());
    let [y0, y1] = [0, 1].map(|i| y.blocks()[i].id().to_hex());

    let by_time = ids(&ok(&["cat", "--store", s(&store)]));
    assert_eq!(by_time, [x0.clone(), y0.clone(), x1.clone(), y1.clone()]);
    let by_feed = ids(&ok(&["cat", "--store", s(&store), "--by-feed"]));
    assert!(
        by_feed == [x0.clone(), x1.clone(), y0.clone(), y1.clone()]
            || by_feed == [y0.clone(), y1.clone(), x0.clone(), x1.clone()],
        "{by_feed:?}"
    );
    let since = ids(&ok(&["cat", "--store", s(&store), "--since", &y0]));
    assert_eq!(since, [x1.clone(), y1.clone()]);
    assert!(ok(&["cat", "--store", s(&store), "--since", &y1]).is_empty());
    let unknown = BlockId([1; 32]).to_hex();
    let line = one_line_error(&run(&["cat", "--store", s(&store), "--since", &unknown]));
    assert!(line.contains("no block"), "{line}");

    // --follow --since through a node: what came after the block, then what arrives.
    let node = NodeProcess::start(&store, &[]);
    let mut child = blockend()
        .args(["cat", "--store", s(&store), "--follow", "--since", &x1])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |rx: &std::sync::mpsc::Receiver<String>| -> serde_json::Value {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("cat --follow prints a line");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next(&rx)["id"], y1.as_str());
    let fresh = append(&store, r#"{"value": 1}"#);
    assert_eq!(next(&rx)["id"], fresh["id"]);
    let _ = child.kill();
    let _ = child.wait();
    node.stop();
}

#[test]
fn blockend_store_names_the_store_when_the_flag_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    append(&store, r#"{"value": 4}"#);
    let output = blockend()
        .args(["state"])
        .env("BLOCKEND_STORE", &store)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_lines(&output)[0]["state"]["total"], 4);
    // The flag wins over the variable.
    let other = dir.path().join("other");
    init(&other, "counter");
    let output = blockend()
        .args(["state", "--store", s(&other)])
        .env("BLOCKEND_STORE", &store)
        .output()
        .unwrap();
    assert_eq!(json_lines(&output)[0]["state"]["total"], 0);
    let output = blockend()
        .args(["state"])
        .env_remove("BLOCKEND_STORE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("--store"), "{error}");
}

#[test]
fn apps_lists_every_app_with_an_example_body_each_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let apps = ok(&["apps"]);
    let names: Vec<&str> = apps.iter().map(|a| a["app"].as_str().unwrap()).collect();
    assert_eq!(names, ["clock", "counter", "chat", "kv"]);
    for app in &apps {
        let name = app["app"].as_str().unwrap();
        let store = dir.path().join(name);
        init(&store, name);
        for slice in app["slices"].as_array().unwrap() {
            assert!(!slice["accepts"].as_str().unwrap().is_empty());
            append(&store, &slice["example"].to_string());
        }
    }
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for name in names {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn a_body_no_slice_accepts_says_what_was_expected_and_reasons_read_as_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("counter");
    init(&store, "counter");
    let line = one_line_error(&run(&["append", "--store", s(&store), "{}"]));
    assert!(
        line.contains("expected") && line.contains("\"value\""),
        "{line}"
    );
    let clock = dir.path().join("clock");
    init(&clock, "clock");
    let line = one_line_error(&run(&[
        "append",
        "--store",
        s(&clock),
        r#"{"tick": 99999999999999}"#,
    ]));
    assert!(!line.contains("TimestampFromFuture"), "{line}");
    assert!(line.contains("later than"), "{line}");
}

#[test]
fn every_app_prints_state_in_one_shape_and_kv_shows_json_values_without_deleted_keys() {
    let dir = tempfile::tempdir().unwrap();
    for app in ["clock", "counter", "chat", "kv"] {
        let store = dir.path().join(app);
        init(&store, app);
        let state = ok(&["state", "--store", s(&store)]).remove(0);
        let mut keys: Vec<&String> = state.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["digest", "set_hash", "slice", "state"],
            "{app}: {state}"
        );
        assert_eq!(state["slice"], app);
    }
    let kv = dir.path().join("kv");
    append(&kv, r#"{"set": {"key": "n", "value": 1}}"#);
    append(&kv, r#"{"set": {"key": "s", "value": "one"}}"#);
    append(&kv, r#"{"set": {"key": "o", "value": {"a": [1, 2]}}}"#);
    append(&kv, r#"{"set": {"key": "gone", "value": true}}"#);
    append(&kv, r#"{"delete": "gone"}"#);
    let state = ok(&["state", "--store", s(&kv)]).remove(0);
    assert_eq!(
        state["state"],
        serde_json::json!({"n": 1, "s": "one", "o": {"a": [1, 2]}}),
        "{state}"
    );
}

/// Stands in for a node on the store's socket for one request: reads it, writes `answer`
/// (nothing more: no end line), and closes.
fn dying_node(store: &Path, answer: Vec<u8>) -> std::thread::JoinHandle<()> {
    use std::io::Write;
    let path = store.join("node.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let _ = (&stream).write_all(&answer);
    })
}

#[test]
fn a_node_that_dies_mid_answer_never_passes_a_cut_line_for_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    append(&store, r#"{"value": 1}"#);
    // Half a state line, no newline: never printed; the store itself answers.
    let served = dying_node(&store, br#"{"slice":"counter","state":{"total":"#.to_vec());
    let shown = ok(&["state", "--store", s(&store)]);
    served.join().unwrap();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["state"]["total"], 1);
    // Peers are a node's to tell: a node gone before answering is an error, not "no peers".
    let served = dying_node(&store, Vec::new());
    let line = one_line_error(&run(&["peers", "--store", s(&store)]));
    served.join().unwrap();
    assert!(line.contains("stopped before it answered"), "{line}");
}

#[test]
fn a_listing_the_node_cuts_short_fails_instead_of_passing_for_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init(&store, "counter");
    let block = append(&store, r#"{"value": 1}"#);
    // Stands in for a node that dies after the first line of its answer.
    let listener = std::os::unix::net::UnixListener::bind(store.join("node.sock")).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let _ = writeln!(&stream, "{block}");
    });
    let output = run(&["cat", "--store", s(&store)]);
    assert!(!output.status.success(), "{output:?}");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("not all there is"), "{error}");
}
