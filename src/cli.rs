//! The `blockend` verbs. JSON lines on stdout; logs, progress and errors on stderr.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use blockend::api::{self, Client, Request};
use blockend::app::StateError;
use blockend::kernel::store::RocksStore;
use blockend::kernel::PublicKey;
use blockend::node::{self, Stats};
use blockend::{store, Node, NodeApp, ReadyApp};
use libp2p::Multiaddr;

mod args;
pub use args::{Args, Bench, Command};

/// Prints one JSON line on stdout.
pub fn emit(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Init {
            store,
            app,
            capacity,
        } => init(&store, app, capacity),
        Command::Node {
            store,
            app,
            listen,
            peer,
            bootstrap,
            no_mdns,
            relay,
            external,
            no_holepunch,
            lab_nonglobal_addresses,
            capacity,
        } => {
            let peers = Peers {
                peer,
                bootstrap,
                mdns: !no_mdns,
                relay,
                external,
                holepunch: !no_holepunch,
                nonglobal: lab_nonglobal_addresses,
            };
            run_node(&store, app, capacity, listen, peers).await
        }
        Command::Append { store, body } => append(&store, &body).await,
        Command::Cat {
            store,
            follow,
            author,
        } => cat(&store, author, follow).await,
        Command::State {
            store,
            slice,
            follow,
        } => state(&store, slice, follow).await,
        Command::Peers { store } => peers(&store).await,
        Command::Stats { store } => stats(&store).await,
        Command::Feeds { store } => feeds(&store).await,
        Command::Follow { author, store } => set_follow(&store, author, true).await,
        Command::Unfollow { author, store } => set_follow(&store, author, false).await,
        Command::Repair { store } => repair(&store),
        Command::Sim {
            scenario,
            seed,
            peers,
            svg,
            html,
        } => {
            let args = blockend_sim::cli::Args {
                scenario,
                seed,
                peers,
                svg,
                html,
            };
            // The simulator is CPU-bound and synchronous: keep it off the async workers.
            tokio::task::spawn_blocking(move || blockend_sim::cli::run(&args)).await??;
            Ok(())
        }
        Command::Bench {
            bench: Bench::Sync { blocks },
        } => crate::bench::sync(blocks).await,
        Command::Bench {
            bench: Bench::Flood { seconds, capacity },
        } => crate::bench::flood(seconds, capacity).await,
        Command::Bench {
            bench: Bench::Reconcile { feeds, diffs },
        } => tokio::task::block_in_place(|| crate::bench::reconcile(feeds, &diffs)),
    }
}

fn repair(dir: &Path) -> anyhow::Result<()> {
    if !store::probe(dir)? {
        return Err(store::Error::Missing {
            path: dir.to_owned(),
        }
        .into());
    }
    let report = RocksStore::repair_with(dir, store::rocks_config())?;
    let mut line = serde_json::to_value(&report)?;
    line["feeds"] = report
        .feeds
        .iter()
        .map(|f| serde_json::json!({"author": f.author.to_hex(), "kept": f.kept, "before": f.before}))
        .collect();
    line["blocks_before"] = report.blocks_before().into();
    line["found_damage"] = report.found_damage().into();
    emit(&line)?;
    if report.found_damage() {
        let lost = match &report.lost_file {
            Some(file) => format!(" (set aside in {})", file.display()),
            None => String::new(),
        };
        eprintln!(
            "repair: kept {} blocks, lost {}{lost}; {} feeds lost their newest blocks",
            report.blocks_kept,
            report.blocks_lost,
            report.feeds.len()
        );
    } else {
        eprintln!("repair: no damage found; the store is unchanged");
    }
    Ok(())
}

fn init(dir: &Path, app: ReadyApp, capacity: Option<u64>) -> anyhow::Result<()> {
    let (kernel, _, _) = store::open_with_capacity(dir, Some(app), capacity, true)?;
    emit(&serde_json::json!({ "author": kernel.author().to_hex() }))?;
    drop(kernel.close());
    Ok(())
}

/// Whom a node finds its peers through.
struct Peers {
    /// `--peer`: dialed and kept.
    peer: Vec<Multiaddr>,
    /// `--bootstrap`: the same, and remembered in the store.
    bootstrap: Vec<Multiaddr>,
    mdns: bool,
    /// `--relay`: serve as a relay.
    relay: bool,
    /// `--external`.
    external: Vec<Multiaddr>,
    /// Not `--no-holepunch`.
    holepunch: bool,
    /// `--lab-nonglobal-addresses`.
    nonglobal: bool,
}

async fn run_node(
    dir: &Path,
    app: Option<ReadyApp>,
    capacity: Option<u64>,
    listen: Vec<Multiaddr>,
    found: Peers,
) -> anyhow::Result<()> {
    let (kernel, app, repair) = store::open_with_capacity(dir, app, capacity, true)?;
    let loss = store::own_feed_loss(dir, &kernel, repair.as_ref());
    let mut peers = found.peer;
    for addr in store::bootstrap_peers(dir, &found.bootstrap)? {
        if !peers.contains(&addr) {
            peers.push(addr);
        }
    }
    let mut config = node::Config::default()
        .with_peers(peers)
        .with_mdns(found.mdns)
        .with_relay(found.relay)
        .with_external(found.external)
        .with_holepunch(found.holepunch)
        .with_nonglobal_addresses(found.nonglobal)
        .with_address_book(dir.join(store::PEERS_FILE));
    config.app = app.name().to_owned();
    if !listen.is_empty() {
        config = config.with_listen(listen);
    }
    let node = Node::spawn(kernel, Arc::new(app), config).await?;
    if let (Some(loss), Some(repair)) = (loss, repair) {
        // After a repair that cut the own feed short, appends wait for peers to send it back;
        // once the wait is over, later starts do not wait again.
        node.handle()
            .recover_own_feed(loss.before, RECOVERY_WAIT)
            .await?;
        let dir = dir.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(RECOVERY_WAIT).await;
            if let Err(error) = store::mark_recovered(&dir, &repair) {
                tracing::warn!(%error, "cannot record the end of the own feed's recovery");
            }
        });
    }
    let server = api::Server::start(dir, node.handle().clone())
        .with_context(|| format!("cannot open the local socket for {}", dir.display()))?;
    // Handled before the node says it listens: a supervisor may stop it right after.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    for addr in node.handle().listening().await? {
        emit(&serde_json::json!({ "listening": addr.to_string() }))?;
    }
    tracing::info!(peer = %node.handle().peer_id(), app = app.name(), socket = %server.path().display(), "node running");
    wait_for_signal(term).await?;
    tracing::info!("stopping");
    drop(server);
    node.shutdown().await;
    Ok(())
}

/// How long a node started on a repaired store waits for peers to send back the own feed's
/// lost blocks before it accepts appends anyway.
const RECOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn wait_for_signal(mut term: tokio::signal::unix::Signal) -> anyhow::Result<()> {
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Sends a request to the running node and prints every line of the answer; an error line
/// becomes the command's error. Returns how many lines were printed before the node closed
/// the connection.
/// Relays a request's answer to stdout; returns the lines printed. A connection the node
/// closed or reset before a line came back (it was stopping: the write meets a broken pipe,
/// the read a reset) is 0 lines, like a node that closed without answering, so the caller
/// reads the store itself (or checks a dropped append) instead of failing on the race.
async fn relay(client: Client, request: &Request) -> anyhow::Result<usize> {
    fn gone(error: &std::io::Error) -> bool {
        use std::io::ErrorKind::*;
        matches!(
            error.kind(),
            BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | UnexpectedEof
        )
    }
    let mut lines = match client.request(request).await {
        Ok(lines) => lines,
        Err(error) if gone(&error) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut printed = 0;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) if printed == 0 && gone(&error) => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&line) {
            if let (1, Some(serde_json::Value::String(error))) = (map.len(), map.get("error")) {
                bail!("{error}");
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        printed += 1;
    }
    Ok(printed)
}

/// A `--follow` stream relayed from the node: it ends only when the node goes away, which is
/// a failure the user hears of (a supervisor or a script must not take it for the end of
/// the data).
async fn follow(dir: &Path, client: Client, request: &Request) -> anyhow::Result<()> {
    match relay(client, request).await {
        Ok(_) => bail!(
            "the node on {} went away: nothing more will arrive (restart it with `blockend node --store {}`)",
            dir.display(),
            dir.display()
        ),
        Err(error) if is_stopped(&error) => bail!(
            "the node on {} stopped: nothing more will arrive",
            dir.display()
        ),
        Err(error) => Err(error),
    }
}

/// `--follow` without a running node: what is stored was printed, nothing will follow.
fn no_node_to_follow(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no node is running on {}: --follow needs one to stream what arrives (start it with `blockend node --store {}`)",
        dir.display(),
        dir.display()
    )
}

/// Whether a read relayed to the node went unanswered because the node was stopping: it said
/// so, or it closed the connection before a line (its process exited mid-request). The read
/// then goes to the store itself, read-only (the node's lock does not stand in its way); a
/// read whose answer is rightly empty reads nothing there either.
fn node_stopped(answer: &anyhow::Result<usize>) -> bool {
    match answer {
        Ok(printed) => *printed == 0,
        Err(error) => is_stopped(error),
    }
}

/// Whether the node's answer was that it has stopped.
fn is_stopped(error: &anyhow::Error) -> bool {
    error.to_string() == node::Error::Stopped.to_string()
}

async fn append(dir: &Path, body: &str) -> anyhow::Result<()> {
    let text = if body == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the body from stdin")?;
        text
    } else {
        body.to_owned()
    };
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("BODY is not JSON: {e}"))?;
    if let Some(client) = Client::connect(dir).await {
        let sent_at = now_ms();
        let answer = relay(client, &Request::Append { body: body.clone() }).await;
        return match answer {
            Ok(0) => dropped_append(
                dir,
                &body,
                sent_at,
                "closed the connection before it answered",
            ),
            Err(error) if is_stopped(&error) => {
                dropped_append(dir, &body, sent_at, "stopped before it answered")
            }
            other => other.map(drop),
        };
    }
    let (mut kernel, _, repair) = store::open_checked(dir, None, false)?;
    if let Some(loss) = store::own_feed_loss(dir, &kernel, repair.as_ref()) {
        drop(kernel.close());
        bail!(
            "the store at {} was repaired and its own feed lost its blocks after seq {} (it had reached seq {}): run `blockend node --store {}` with a peer that holds them, which waits for them before appending, so no block reuses a height",
            dir.display(),
            loss.kept.map_or_else(|| "none".to_owned(), |s| s.to_string()),
            loss.before,
            dir.display()
        );
    }
    let result = kernel.create_block(serde_json::to_vec(&body)?);
    let printed = result.map(|block| emit(&api::block_json(&block)));
    drop(kernel.close());
    printed??;
    Ok(())
}

/// Milliseconds since the Unix epoch, the clock the node stamps its blocks with.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An append the node took but did not answer (it crashed or stopped): whether the block was
/// written is read from the store itself, read-only. Written means the own feed holds a block
/// with this body stamped at or after the moment the request was sent (the node runs on this
/// machine's clock); then it is printed as a normal append would, with a warning. Otherwise
/// the append fails, saying the block was not written. Two appends of the same body racing
/// each other can both read the one block as theirs; a clock stepped back between the request
/// and the write makes a written block look unwritten.
fn dropped_append(
    dir: &Path,
    body: &serde_json::Value,
    sent_at: u64,
    what: &str,
) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(body)?;
    let (kernel, _) = store::open_read_only(dir).with_context(|| {
        format!(
            "the node on {} {what}, and the store cannot be read to tell whether the block was written",
            dir.display()
        )
    })?;
    // The store's author as recorded, not the read-only open's key (a throwaway one when this
    // user may not read the secret).
    let author = store::own_author(dir, &kernel);
    let written = api::blocks(&kernel, Some(author))
        .into_iter()
        .rev()
        .take_while(|block| block.time() >= sent_at)
        .find(|block| block.body() == Some(bytes.as_slice()));
    drop(kernel.close());
    match written {
        Some(block) => {
            tracing::warn!(
                seq = block.seq(),
                "the node on {} {what}; the block was written",
                dir.display()
            );
            emit(&api::block_json(&block))
        }
        None => bail!(
            "the node on {} {what}: the block was not written (the own feed holds no block with this body since the request); append it again",
            dir.display()
        ),
    }
}

async fn cat(dir: &Path, author: Option<String>, follow: bool) -> anyhow::Result<()> {
    let key = author
        .as_deref()
        .map(api::parse_author)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(client) = Client::connect(dir).await {
        let request = Request::Cat { author, follow };
        if follow {
            return self::follow(dir, client, &request).await;
        }
        let answer = relay(client, &request).await;
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let (kernel, _) = store::open_read_only(dir)?;
    for block in api::blocks(&kernel, key) {
        emit(&api::block_json(&block))?;
    }
    drop(kernel.close());
    if follow {
        return Err(no_node_to_follow(dir));
    }
    Ok(())
}

async fn state(dir: &Path, slice: Option<String>, follow: bool) -> anyhow::Result<()> {
    if let Some(client) = Client::connect(dir).await {
        let request = Request::State {
            slice: slice.clone(),
            follow,
        };
        if follow {
            return self::follow(dir, client, &request).await;
        }
        let answer = relay(client, &request).await;
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let (kernel, app) = store::open_read_only(dir)?;
    let name = slice.unwrap_or_else(|| app.default_slice().to_owned());
    let result = app
        .state_json(&kernel, &name)
        .map(|state| api::state_with_digests(&kernel, &name, state));
    drop(kernel.close());
    let state = match result {
        Err(StateError::UnknownSlice { .. }) => bail!("no slice {name:?} in app {}", app.name()),
        other => other?,
    };
    emit(&state)?;
    if follow {
        return Err(no_node_to_follow(dir));
    }
    Ok(())
}

async fn peers(dir: &Path) -> anyhow::Result<()> {
    if let Some(client) = Client::connect(dir).await {
        return relay(client, &Request::Peers).await.map(drop);
    }
    if !store::exists(dir) {
        store::app_of(dir)?;
    }
    bail!(
        "no node is running on {}: peers are a running node's connections (start it with `blockend node --store {}`)",
        dir.display(),
        dir.display()
    )
}

async fn stats(dir: &Path) -> anyhow::Result<()> {
    if let Some(client) = Client::connect(dir).await {
        let answer = relay(client, &Request::Stats).await;
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let (kernel, _) = store::open_read_only(dir)?;
    let mut stats = Stats::default();
    stats.update_from_as(&kernel, store::own_author(dir, &kernel));
    drop(kernel.close());
    emit(&stats)
}

async fn feeds(dir: &Path) -> anyhow::Result<()> {
    if let Some(client) = Client::connect(dir).await {
        let answer = relay(client, &Request::Feeds).await;
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let (kernel, _) = store::open_read_only(dir)?;
    let feeds = api::feeds_as(&kernel, store::own_author(dir, &kernel));
    drop(kernel.close());
    for feed in &feeds {
        emit(&api::feed_json(feed))?;
    }
    Ok(())
}

/// `follow` (`follow` true) and `unfollow`: through the running node, else on the store
/// itself, opened for writing as an offline `append` does. A node that stops or goes away
/// before it answers leaves the change to be made offline: following is idempotent, so it is
/// made at most once (`changed` is then false if the node had made it).
async fn set_follow(dir: &Path, author: PublicKey, follow: bool) -> anyhow::Result<()> {
    if let Some(client) = Client::connect(dir).await {
        let request = if follow {
            Request::Follow {
                author: author.to_hex(),
            }
        } else {
            Request::Unfollow {
                author: author.to_hex(),
            }
        };
        match relay(client, &request).await {
            Ok(0) => {}
            Err(error) if is_stopped(&error) => {}
            other => return other.map(drop),
        }
    }
    let (mut kernel, _, _) = store::open_checked(dir, None, false)?;
    let changed = if follow {
        kernel.follow(author)
    } else {
        kernel.unfollow(&author)
    };
    drop(kernel.close());
    emit(&api::follow_json(&author, follow, changed?))
}
