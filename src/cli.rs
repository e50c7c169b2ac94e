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
use blockend::{archive, store, Node, NodeApp, ReadyApp};
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
            since,
            by_feed,
        } => {
            let listing = Listing {
                author,
                since,
                by_feed,
            };
            cat(&store, listing, follow).await
        }
        Command::Id { store } => id(&store).await,
        Command::Head { store, author } => head(&store, author).await,
        Command::Get { store, id } => get(&store, &id).await,
        Command::Export { store, author } => export(&store, author).await,
        Command::Import { store, file } => import(&store, &file).await,
        Command::Apps => {
            for app in ReadyApp::ALL {
                emit(&app.info())?;
            }
            Ok(())
        }
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

/// What [`relay`] saw of an answer.
#[derive(Clone, Copy, Debug)]
struct Relayed {
    /// Lines printed.
    printed: usize,
    /// Whether the node ended the answer with its end line ([`api::DONE`]): the answer is
    /// whole, even when it has no line.
    complete: bool,
}

/// Relays a request's answer to stdout; an error line becomes the command's error. A
/// connection the node closed or reset before a line came back (it was stopping: the write
/// meets a broken pipe, the read a reset) is 0 lines and not complete, like a node that closed
/// without answering, so the caller reads the store itself (or checks a dropped append)
/// instead of failing on the race. Any other answer cut off after some lines fails (the lines
/// printed are not all there is), but for follow streams and single-line answers to writes; a
/// line cut in the middle is never printed.
async fn relay(client: Client, request: &Request) -> anyhow::Result<Relayed> {
    fn gone(error: &std::io::Error) -> bool {
        use std::io::ErrorKind::*;
        matches!(
            error.kind(),
            BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | UnexpectedEof
        )
    }
    let unanswered = Relayed {
        printed: 0,
        complete: false,
    };
    let mut lines = match client.request(request).await {
        Ok(lines) => lines,
        Err(error) if gone(&error) => return Ok(unanswered),
        Err(error) => return Err(error.into()),
    };
    let mut printed = 0;
    let mut complete = false;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) if printed == 0 && gone(&error) => return Ok(unanswered),
            Err(error) if gone(&error) => break,
            Err(error) => return Err(error.into()),
        };
        match serde_json::from_str(&line) {
            Ok(serde_json::Value::Object(map)) => {
                if let (1, Some(serde_json::Value::String(error))) = (map.len(), map.get("error")) {
                    bail!("{error}");
                }
                if map.len() == 1 && map.get(api::DONE) == Some(&serde_json::Value::Bool(true)) {
                    complete = true;
                    break;
                }
            }
            Ok(_) => {}
            // A line cut off as the node died (the last one comes without its newline):
            // never printed.
            Err(_) => break,
        }
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        printed += 1;
    }
    // Follow streams end only when the node goes away (their callers say so); an append,
    // follow or unfollow whose one line came is done (its caller handles no line at all).
    let must_be_whole = !matches!(
        request,
        Request::Cat { follow: true, .. }
            | Request::State { follow: true, .. }
            | Request::Append { .. }
            | Request::Follow { .. }
            | Request::Unfollow { .. }
    );
    if must_be_whole && printed > 0 && !complete {
        bail!(
            "the node stopped before it finished answering: the {printed} lines above are not all there is (run the command again; a node of an older blockend never says it is done: restart it)"
        );
    }
    Ok(Relayed { printed, complete })
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
/// so, or it closed the connection before a line and before its end line (its process exited
/// mid-request). The read then goes to the store itself, read-only (the node's lock does not
/// stand in its way). An answer rightly empty ends with the end line, so it is not read again.
fn node_stopped(answer: &anyhow::Result<Relayed>) -> bool {
    match answer {
        Ok(relayed) => relayed.printed == 0 && !relayed.complete,
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
            Ok(Relayed { printed: 0, .. }) => dropped_append(
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

/// What `cat` lists.
struct Listing {
    author: Option<String>,
    since: Option<String>,
    by_feed: bool,
}

async fn cat(dir: &Path, listing: Listing, follow: bool) -> anyhow::Result<()> {
    let key =
        api::parse_optional_author(listing.author.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    let since = listing
        .since
        .as_deref()
        .map(api::parse_block_id)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(client) = Client::connect(dir).await {
        let request = Request::Cat {
            author: listing.author,
            follow,
            since: listing.since,
            by_feed: listing.by_feed,
        };
        if follow {
            return self::follow(dir, client, &request).await;
        }
        let answer = relay(client, &request).await;
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let (kernel, _) = store::open_view(dir)?;
    let blocks = api::listing(&kernel, key, listing.by_feed, since.as_ref());
    drop(kernel);
    for block in blocks.map_err(|e| anyhow::anyhow!(e))? {
        emit(&api::block_json(&block))?;
    }
    if follow {
        return Err(no_node_to_follow(dir));
    }
    Ok(())
}

/// `id`: the store's author and the peer id its node has (the same key), from the running
/// node or, without one, from the store's files (no lock, no secret needed).
async fn id(dir: &Path) -> anyhow::Result<()> {
    if let Some(client) = Client::connect(dir).await {
        let answer = relay(client, &Request::Id {}).await;
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let author = match store::recorded_author(dir)? {
        Some(author) => author,
        None => {
            let (kernel, _) = store::open_read_only(dir)?;
            let author = store::own_author(dir, &kernel);
            drop(kernel.close());
            author
        }
    };
    let peer = node::peer_id_of(&author).map_err(|e| anyhow::anyhow!(e))?;
    emit(&serde_json::json!({ "author": author.to_hex(), "peer": peer.to_base58() }))
}

async fn head(dir: &Path, author: Option<String>) -> anyhow::Result<()> {
    let key = api::parse_optional_author(author.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(client) = Client::connect(dir).await {
        let answer = relay(client, &Request::Head { author }).await;
        // No line at all may be the answer (no such feed) or a node that closed the
        // connection; the store itself tells.
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let (kernel, _) = store::open_view(dir)?;
    let lines = api::head_json(&kernel, key);
    drop(kernel);
    for line in &lines {
        emit(line)?;
    }
    Ok(())
}

async fn get(dir: &Path, id: &str) -> anyhow::Result<()> {
    let block = api::parse_block_id(id).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(client) = Client::connect(dir).await {
        let answer = relay(client, &Request::Get { id: block.to_hex() }).await;
        if !node_stopped(&answer) {
            return answer.map(drop);
        }
    }
    let (kernel, _) = store::open_view(dir)?;
    let line = api::get_json(&kernel, &block);
    drop(kernel);
    match line {
        Some(line) => emit(&line),
        None => bail!("{}", api::no_block(&block)),
    }
}

/// Progress lines on stderr for export and import: at most one per `STEP` blocks, and the
/// last.
const PROGRESS_STEP: u64 = 10_000;

fn progress(verb: &str, done: u64, about: u64, last_told: &mut u64) {
    if done < *last_told + PROGRESS_STEP {
        return;
    }
    *last_told = done;
    if about >= done && about > 0 {
        eprintln!(
            "{verb}: {done} of about {about} blocks ({}%)",
            done * 100 / about
        );
    } else {
        eprintln!("{verb}: {done} blocks");
    }
}

async fn export(dir: &Path, author: Option<String>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let key = api::parse_optional_author(author.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    if std::io::stdout().is_terminal() {
        bail!(
            "export writes a binary archive to stdout: redirect it to a file (blockend export --store {} > FILE)",
            dir.display()
        );
    }
    if !store::probe(dir)? {
        return Err(store::Error::Missing {
            path: dir.to_owned(),
        }
        .into());
    }
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match Client::connect(dir).await {
        Some(client) => export_from_node(dir, client, author, out).await?,
        None => {
            let (kernel, _) = store::open_view(dir)?;
            let result = export_from_kernel(&kernel, key, out);
            drop(kernel);
            result?
        }
    };
    eprintln!(
        "export: {} feeds, {} blocks, {} fork proofs",
        written.feeds, written.blocks, written.proofs
    );
    Ok(())
}

fn export_from_kernel(
    kernel: &blockend::kernel::Kernel,
    author: Option<PublicKey>,
    out: impl Write,
) -> anyhow::Result<archive::Totals> {
    let mut cursor = archive::ExportCursor::new(kernel, author);
    let about = cursor.about();
    let mut writer = archive::Writer::new(out, about)?;
    let mut told = 0;
    while let Some(record) = cursor.next(kernel) {
        match record {
            archive::Record::Feed(run) => writer.feed(&run)?,
            archive::Record::Proof(pair) => writer.proof(&pair.0, &pair.1)?,
        }
        progress("export", cursor.written().blocks, about.blocks, &mut told);
    }
    Ok(writer.finish()?)
}

/// An export through the running node: its lines (see [`Request::Export`]) become the
/// archive's records. A node that stops before its end line leaves an archive without an
/// end record, which import reads up to the cut and then refuses as cut short.
async fn export_from_node(
    dir: &Path,
    client: Client,
    author: Option<String>,
    out: impl Write,
) -> anyhow::Result<archive::Totals> {
    let stopped = || {
        anyhow::anyhow!(
            "the node on {} stopped during the export: the archive is incomplete; run the export again",
            dir.display()
        )
    };
    let mut lines = client.request(&Request::Export { author }).await?;
    let mut told = 0;
    let first = lines
        .next_line()
        .await
        .map_err(|_| stopped())?
        .ok_or_else(stopped)?;
    let value: serde_json::Value = serde_json::from_str(&first)?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        bail!("{error}");
    }
    let about: archive::Totals = match value.get("about") {
        Some(totals) => serde_json::from_value(totals.clone())?,
        None => bail!("the node sent an export line this build does not read: {first}"),
    };
    let mut writer = archive::Writer::new(out, about)?;
    let mut done = 0;
    while let Some(line) = lines.next_line().await.map_err(|_| stopped())? {
        let value: serde_json::Value = serde_json::from_str(&line)?;
        let bad = || anyhow::anyhow!("the node sent an export line this build does not read");
        if let Some(run) = value.get("feed").and_then(|f| f.as_str()) {
            let run = blockend::kernel::Feed::decode(&hex::decode(run)?)?;
            writer.feed(&run)?;
            done += run.len() as u64;
            progress("export", done, about.blocks, &mut told);
        } else if let Some(pair) = value.get("proof").and_then(|p| p.as_array()) {
            let [a, b] = pair.as_slice() else {
                return Err(bad());
            };
            let block = |v: &serde_json::Value| -> anyhow::Result<blockend::kernel::Block> {
                Ok(blockend::kernel::Block::decode(&hex::decode(
                    v.as_str().ok_or_else(bad)?,
                )?)?)
            };
            writer.proof(&block(a)?, &block(b)?)?;
        } else if value.get("end").is_some() {
            return Ok(writer.finish()?);
        } else if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            bail!("{error}");
        } else {
            return Err(bad());
        }
    }
    Err(stopped())
}

/// The largest block an import offers (encoded): 1 MiB, sixteen times the kernel's default
/// body limit. A larger one in an archive is counted invalid and never sent, so a batch's
/// request to the node stays under the socket's limit whatever the archive holds.
const IMPORT_MAX_BLOCK_BYTES: usize = 1 << 20;
/// Most blocks an import hands the kernel at once.
const IMPORT_BATCH_BLOCKS: usize = archive::CHUNK_BLOCKS;
/// Most bytes of blocks in one import batch (one block may be larger): hex-encoded in a
/// request to the node, twice this stays well under the socket's 16 MiB request limit.
const IMPORT_BATCH_BYTES: usize = archive::CHUNK_BYTES;

async fn import(dir: &Path, file: &Path) -> anyhow::Result<()> {
    let input: Box<dyn Read + Send> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        )
    };
    if !store::probe(dir)? {
        return Err(store::Error::Missing {
            path: dir.to_owned(),
        }
        .into());
    }
    let mut reader = archive::Reader::new(std::io::BufReader::new(input))
        .with_context(|| format!("{}", file.display()))?;
    let about = reader.about();
    let mut target = if Client::connect(dir).await.is_some() {
        ImportTarget::Node
    } else {
        let (kernel, _, _) = store::open_checked(dir, None, false)?;
        ImportTarget::Kernel(Box::new(kernel))
    };
    let mut counts = api::ImportCounts::default();
    let mut batch: Vec<blockend::kernel::Block> = Vec::new();
    let mut batch_bytes = 0;
    // Fork proofs go in batches of their own, after the feed blocks read before them: their
    // blocks are mostly in the feed runs already, so only the forks they prove are counted.
    let mut proofs: Vec<blockend::kernel::Block> = Vec::new();
    let mut proofs_bytes = 0;
    let mut told = 0;
    let failure = 'records: loop {
        let record = match reader.next_record() {
            Ok(record) => record,
            Err(error) => {
                break Some(anyhow::Error::from(error).context(file.display().to_string()))
            }
        };
        let done = record.is_none();
        match record {
            Some(archive::Record::Feed(run)) => {
                for block in run.into_blocks() {
                    let size = block.encoded_len();
                    if size > IMPORT_MAX_BLOCK_BYTES {
                        // Far over any body a kernel takes: refused here, never sent.
                        counts.offered += 1;
                        counts.invalid += 1;
                        continue;
                    }
                    if !batch.is_empty()
                        && (batch.len() >= IMPORT_BATCH_BLOCKS
                            || batch_bytes + size > IMPORT_BATCH_BYTES)
                    {
                        let blocks = std::mem::take(&mut batch);
                        batch_bytes = 0;
                        if let Err(error) = target.take(dir, blocks, &mut counts, false).await {
                            break 'records Some(error);
                        }
                        progress("import", counts.offered, about.blocks, &mut told);
                    }
                    batch_bytes += size;
                    batch.push(block);
                }
            }
            Some(archive::Record::Proof(pair)) => {
                let (a, b) = *pair;
                if a.encoded_len().max(b.encoded_len()) <= IMPORT_MAX_BLOCK_BYTES {
                    proofs_bytes += a.encoded_len() + b.encoded_len();
                    proofs.extend([a, b]);
                }
            }
            None => {}
        }
        let proofs_full =
            proofs.len() + 2 > IMPORT_BATCH_BLOCKS || proofs_bytes >= IMPORT_BATCH_BYTES;
        if done || proofs_full || batch.len() >= IMPORT_BATCH_BLOCKS {
            // Feed blocks first: a proof's blocks link to them.
            let blocks = std::mem::take(&mut batch);
            batch_bytes = 0;
            if let Err(error) = target.take(dir, blocks, &mut counts, false).await {
                break Some(error);
            }
            progress("import", counts.offered, about.blocks, &mut told);
        }
        if done || proofs_full {
            let blocks = std::mem::take(&mut proofs);
            proofs_bytes = 0;
            if let Err(error) = target.take(dir, blocks, &mut counts, true).await {
                break Some(error);
            }
        }
        if done {
            break None;
        }
    };
    // Whatever stopped the import, what came before is in: flush it, then report.
    if failure.is_some() {
        for (blocks, are_proofs) in [(std::mem::take(&mut batch), false), (proofs, true)] {
            if let Err(error) = target.take(dir, blocks, &mut counts, are_proofs).await {
                tracing::warn!(%error, "the blocks read before the failure were not imported");
                break;
            }
        }
    }
    target.close();
    let read = reader.read();
    let mut line = serde_json::to_value(counts)?;
    line["file"] = file.display().to_string().into();
    line["feeds"] = read.feeds.into();
    line["proofs"] = read.proofs.into();
    line["complete"] = failure.is_none().into();
    emit(&line)?;
    eprintln!(
        "import: {} blocks offered, {} accepted, {} already held, {} invalid",
        counts.offered, counts.accepted, counts.already_had, counts.invalid
    );
    match failure {
        Some(error) => Err(error.context("import stopped; the blocks before were imported")),
        None => Ok(()),
    }
}

/// Where an import's batches go: the running node, or the store itself.
enum ImportTarget {
    Node,
    Kernel(Box<blockend::kernel::Kernel>),
}

impl ImportTarget {
    /// Hands one batch over and adds what became of it to `counts`; of a batch of fork
    /// proofs (`proofs`), only the forks found and the invalid blocks.
    async fn take(
        &mut self,
        dir: &Path,
        blocks: Vec<blockend::kernel::Block>,
        counts: &mut api::ImportCounts,
        proofs: bool,
    ) -> anyhow::Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let mut batch = api::ImportCounts::default();
        self.hand_over(dir, blocks, &mut batch).await?;
        if proofs {
            counts.forks += batch.forks;
            counts.invalid += batch.invalid;
        } else {
            counts.add(&batch);
        }
        Ok(())
    }

    async fn hand_over(
        &mut self,
        dir: &Path,
        blocks: Vec<blockend::kernel::Block>,
        counts: &mut api::ImportCounts,
    ) -> anyhow::Result<()> {
        let ids: Vec<_> = blocks.iter().map(|b| b.id()).collect();
        match self {
            Self::Kernel(kernel) => {
                let report = kernel.dispatch(blocks)?;
                counts.count(&ids, &report);
                Ok(())
            }
            Self::Node => {
                let gone = || {
                    anyhow::anyhow!(
                        "the node on {} stopped during the import; run it again (blocks already imported count as already held)",
                        dir.display()
                    )
                };
                let client = Client::connect(dir).await.ok_or_else(gone)?;
                let request = Request::Import {
                    blocks: blocks.iter().map(|b| hex::encode(b.encode())).collect(),
                };
                let mut lines = client.request(&request).await.map_err(|_| gone())?;
                let line = lines
                    .next_line()
                    .await
                    .map_err(|_| gone())?
                    .ok_or_else(gone)?;
                let value: serde_json::Value = serde_json::from_str(&line)?;
                if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
                    bail!("{error}");
                }
                let batch: api::ImportCounts =
                    serde_json::from_value(value.get("import").cloned().ok_or_else(gone)?)?;
                counts.add(&batch);
                Ok(())
            }
        }
    }

    fn close(self) {
        if let Self::Kernel(kernel) = self {
            drop(kernel.close());
        }
    }
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
    let (kernel, app) = store::open_view(dir)?;
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
        let answer = relay(client, &Request::Peers {}).await;
        if node_stopped(&answer) {
            bail!(
                "the node on {} stopped before it answered: peers are a running node's connections",
                dir.display()
            );
        }
        return answer.map(drop);
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
        let answer = relay(client, &Request::Stats {}).await;
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
        let answer = relay(client, &Request::Feeds {}).await;
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
            Ok(Relayed { printed: 0, .. }) => {}
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
