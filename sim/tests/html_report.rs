//! The HTML report (`blockend sim FILE --html REPORT.html`) rendered in a real browser: the
//! adversaries scenario at 40 peers through the CLI entry, then headless Chromium dumps the
//! page's DOM and takes a screenshot of it.
//!
//! Needs the `chromium` command; `scripts/setup` installs it. Without it the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use blockend_sim::cli::{self, Args};

/// How long one browser run may take before it is killed and the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

/// The `chromium` executable on PATH; panics telling how to install it.
fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `chromium` command is not on PATH: run scripts/setup (it installs \
                 Debian's chromium), then rerun this test"
            )
        })
}

/// Runs headless Chromium on `page` with `extra` arguments, its stdout into `stdout`, and
/// waits for it to exit within [`BROWSER_DEADLINE`] (killing it otherwise).
fn browse(page: &Path, profile: &Path, extra: &[String], stdout: &Path) {
    let out = std::fs::File::create(stdout).expect("stdout file");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    // Waited for on a thread, so the deadline is a channel's timeout, not a polling loop.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(BROWSER_DEADLINE) {
        Ok(status) => {
            let status = status.expect("chromium can be waited for");
            assert!(status.success(), "chromium {extra:?} exited with {status}");
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("chromium {extra:?} did not finish within {BROWSER_DEADLINE:?}");
        }
    }
}

/// The serialised `<svg id="ID">` element of the dumped DOM, inside a captioned figure.
fn plot<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("the DOM has no <svg id=\"{id}\">"));
    let end = start + dom[start..].find("</svg>").expect("the svg is closed");
    let figure = dom[..start]
        .rfind("<figure>")
        .expect("the plot is in a figure");
    assert!(
        !dom[figure..start].contains("</figure>"),
        "{id} is outside its figure"
    );
    let after = &dom[end..];
    let caption = after.find("<figcaption>").expect("a caption follows");
    assert!(
        caption < after.find("</figure>").expect("the figure is closed"),
        "{id}'s figure has no caption"
    );
    &dom[start..end]
}

#[test]
fn the_html_report_renders_every_plot_in_chromium() {
    let browser = chromium();
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("report.html");
    let report = cli::run(&Args {
        scenario: scenario("adversaries"),
        seed: None,
        peers: Some(40),
        svg: Some(dir.path().join("plot.svg")),
        html: Some(page.clone()),
    })
    .expect("the small adversaries run passes");
    let size = std::fs::metadata(&page).expect("HTML report written").len();
    eprintln!("HTML report: {size} bytes");
    assert!(report.rejections.invalid_signature > 0);

    // The DOM as Chromium parsed it: it closes every SVG element explicitly (`></rect>`),
    // which the page's own text never does, so these counts come from parsed elements.
    let dom_file = dir.path().join("dom.html");
    browse(
        &page,
        &dir.path().join("profile-dom"),
        &["--dump-dom".to_string()],
        &dom_file,
    );
    let dom = std::fs::read_to_string(&dom_file).expect("DOM dumped");
    assert!(
        dom.contains("Swarm simulation: adversaries"),
        "{browser:?} dumped no page"
    );
    for (id, least) in [
        ("convergence", 1),
        ("bytes", 8),
        ("delivery", 3),
        ("hops", 3),
    ] {
        let svg = plot(&dom, id);
        let drawn = svg.matches(" class=\"data\"").count();
        let closed = svg.matches("></rect>").count() + svg.matches("></polyline>").count();
        assert!(drawn >= least, "{id}: {drawn} data shapes, wanted {least}");
        assert!(closed > drawn, "{id}: the browser did not parse the shapes");
        assert!(svg.matches("<text").count() >= 4, "{id}: no tick labels");
        assert!(!svg.contains("no data"), "{id} says no data");
    }
    let table = dom
        .find("<table id=\"rejections\">")
        .map(|at| &dom[at..at + dom[at..].find("</table>").expect("table closed")])
        .expect("the DOM has the rejections table");
    assert_eq!(table.matches("<tr data-field=").count(), 11);
    assert!(
        table.contains("<tr data-field=\"invalid_signature\"><td>"),
        "forged blocks were refused, so their row is not greyed"
    );
    assert!(table.contains("class=\"zero\""), "some rows are zero");

    // The screenshot: the page must paint, and the plots' blue must show.
    let shot = dir.path().join("shot.png");
    browse(
        &page,
        &dir.path().join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,3000".to_string(),
        ],
        &dir.path().join("shot.out"),
    );
    let decoder = png::Decoder::new(std::fs::File::open(&shot).expect("screenshot written"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("decodes");
    assert_eq!((frame.width, frame.height), (1200, 3000));
    assert_eq!(frame.bit_depth, png::BitDepth::Eight);
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "{:?}", frame.color_type);
    let pixels: Vec<&[u8]> = pixels[..frame.buffer_size()]
        .chunks_exact(channels)
        .collect();
    let background = &pixels[0][..3];
    let differing = pixels.iter().filter(|p| p[..3] != *background).count();
    let blue = pixels
        .iter()
        .filter(|p| p[0] < 60 && (80..140).contains(&p[1]) && p[2] > 180)
        .count();
    assert!(
        differing > pixels.len() / 50,
        "only {differing} of {} pixels differ from the background {background:?}",
        pixels.len()
    );
    assert!(blue > 2_000, "only {blue} pixels of the plots' blue");
}
