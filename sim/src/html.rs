//! The self-contained HTML report: one page with a summary table, four plots drawn as inline
//! SVG and the rejection table, readable by someone who never saw the JSON. It loads nothing
//! (no scripts, fonts, style sheets or images; its Content-Security-Policy forbids them) and
//! is a function of the [`Report`] alone.

mod plot;

use plot::{bytes, count, count_f, histogram, ms, ms_ticks, nice, no_data, open, round_edge};
use plot::{Plot, RIGHT, W};

use crate::report::{PerPeer, Rejections, Report};

const STYLE: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;\
color:#1f2328;line-height:1.4}h1{margin-bottom:0}.sub{color:#57606a;margin-top:.2em}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #d0d7de;padding:.3em .7em;\
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.zero td{color:#a0a7ae}.fail{color:#cf222e;font-weight:bold}.pass{color:#1a7f37;\
font-weight:bold}figure{margin:2em 0}figcaption{max-width:760px;color:#424a53}\
code{font-size:90%;word-break:break-all}svg{display:block}";

impl Report {
    /// The report as one self-contained HTML page: a title with the scenario, seed and peers;
    /// a summary table (outcome, convergence, violations, traffic); the plots `convergence`,
    /// `bytes`, `delivery` and `hops` as inline `<svg>` elements with those ids, each in a
    /// `<figure>` whose caption says what it shows; and the table `rejections`. A plot without
    /// data says "no data". Text from the scenario is escaped; equal reports give equal pages.
    pub fn html(&self) -> String {
        let name = escape(&self.scenario);
        let mut out = String::with_capacity(32 * 1024);
        out.push_str(&format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>blockend-sim: {name} (seed {seed}, {peers} peers)</title>\n\
             <style>{STYLE}</style>\n</head>\n<body>\n\
             <h1>Swarm simulation: {name}</h1>\n\
             <p class=\"sub\">Scenario <b>{name}</b>, seed {seed}, {peers} peers, {blocks} \
             honest blocks; {virtual_ms} ms of virtual time.</p>\n",
            seed = self.seed,
            peers = self.peers,
            blocks = count(self.blocks as u64),
            virtual_ms = count(self.virtual_ms),
        ));
        self.summary(&mut out);
        figure(
            &mut out,
            "Convergence",
            &self.convergence_svg(),
            &format!(
                "The share of the {honest} honest peers online at the end that held every \
                 honest block, over virtual time counted from the first honest block written. \
                 The line steps up when a peer receives the last block it lacked; the dashed \
                 line marks the last block written. {conv} of {honest} peers got there.",
                honest = self.honest_peers,
                conv = self.converged_peers,
            ),
        );
        figure(
            &mut out,
            "Bytes sent per peer",
            &self.bytes_svg(),
            &format!(
                "Bytes each peer sent over the whole run, by what they paid for: encoded \
                 blocks, Heads messages (what a peer has), Want messages (what it asks for) and \
                 control (framing, push hop annotations, message headers, adversaries' raw \
                 bytes). For each kind the report keeps two figures over all {peers} peers \
                 (adversaries and Sybil peers included): the mean (dark) and the largest single \
                 peer (light); it keeps no other percentiles. \"All bytes\" is each peer's sum \
                 of the four, so its largest peer need not be the sum of the largest per kind.",
                peers = self.peers,
            ),
        );
        let delivered: u64 = self.delivery_ms_histogram.counts.iter().sum();
        figure(
            &mut out,
            "Delivery time",
            &self.delivery_svg(),
            &format!(
                "How long blocks took to arrive: each bar counts the times an honest peer first \
                 held an honest block someone else wrote, by the virtual ms since the block was \
                 written. The buckets grow with the time (1, 2, 3, 5 and 7 times each power of \
                 ten, e.g. 100 to 200 ms, 200 to 300 ms), so the time axis is logarithmic and \
                 both the bulk and the slow tail show. {n} deliveries; median {p50} ms, 99th \
                 percentile {p99} ms, slowest {max} ms.",
                n = count(delivered),
                p50 = count(self.delivery_ms.p50),
                p99 = count(self.delivery_ms.p99),
                max = count(self.delivery_ms.max),
            ),
        );
        let farthest = self.hop_histogram.iter().rposition(|n| *n > 0).unwrap_or(0);
        figure(
            &mut out,
            "Hops",
            &self.hops_svg(),
            &format!(
                "How far blocks travelled: the same deliveries counted by hops from the block's \
                 writer (hop 1: straight from the writer; hop 2: through one other peer; and \
                 so on, by push or by sync). The farthest delivery took {farthest} hops.",
            ),
        );
        self.rejections_table(&mut out);
        out.push_str(&format!(
            "<h2>Reproduce</h2>\n<p><code>{reproduce}</code></p>\n<p class=\"sub\">Trace hash \
             <code>{hash}</code> over {events} events: the same scenario and seed give the \
             same hash. This run took {wall} ms of wall-clock time and peaked at {memory} of \
             memory (not deterministic).</p>\n</body>\n</html>\n",
            reproduce = escape(&self.reproduce),
            hash = escape(&self.trace_hash),
            events = count(self.events),
            wall = count(self.wall_ms),
            memory = if self.peak_memory_bytes == 0 {
                "an unknown amount".to_string()
            } else {
                bytes(self.peak_memory_bytes as f64)
            },
        ));
        out
    }

    fn summary(&self, out: &mut String) {
        let passed = self.violations.is_empty();
        let all = self.converged_peers == self.honest_peers && self.honest_peers > 0;
        let mut rows: Vec<(&str, String)> = vec![
            (
                "Outcome",
                if passed {
                    "<span class=\"pass\">passed</span>: every invariant held".to_string()
                } else {
                    format!(
                        "<span class=\"fail\">FAILED</span>: {} invariant violations (below)",
                        self.violations.len()
                    )
                },
            ),
            (
                "Converged",
                format!(
                    "{}: {} of {} honest peers (online at the end) hold every honest block",
                    if all { "yes" } else { "no" },
                    self.converged_peers,
                    self.honest_peers
                ),
            ),
            (
                "Time to converge",
                if self.converged_peers == 0 {
                    "no peer converged".to_string()
                } else {
                    format!(
                        "median {} ms, 99th percentile {} ms, slowest {} ms (virtual, from the \
                         first honest block)",
                        count(self.convergence_ms.p50),
                        count(self.convergence_ms.p99),
                        count(self.convergence_ms.max)
                    )
                },
            ),
            (
                "Violations",
                if passed {
                    "none".to_string()
                } else {
                    self.violations.len().to_string()
                },
            ),
            (
                "Went quiet",
                if self.quiescent {
                    format!("yes, at {} ms of virtual time", count(self.virtual_ms))
                } else {
                    format!(
                        "no: stopped at the time limit, {} ms",
                        count(self.virtual_ms)
                    )
                },
            ),
            (
                "Blocks",
                format!(
                    "{} honest blocks from {} feeds, written over {} ms",
                    count(self.blocks as u64),
                    self.honest_feeds,
                    count(self.writing_ms)
                ),
            ),
            (
                "Deliveries",
                format!(
                    "{} arrivals of honest blocks (duplicates included); message redundancy \
                     {:.2}, byte redundancy {:.2} (0 would be no waste)",
                    count(self.deliveries),
                    self.rmr,
                    self.byte_redundancy
                ),
            ),
            (
                "Messages sent per peer",
                per_peer(self.messages_per_peer, count_f),
            ),
            (
                "Bytes sent per peer",
                per_peer(self.bytes_per_peer.total, bytes),
            ),
            (
                "Stored per honest peer",
                per_peer(self.storage_bytes_per_peer, bytes),
            ),
            (
                "Messages lost",
                format!(
                    "{} by the loss model, {} by partitions",
                    count(self.lost_messages),
                    count(self.partitioned_messages)
                ),
            ),
        ];
        if self.sybil_feeds > 0 {
            rows.push((
                "Sybil flood",
                format!(
                    "{} fresh feeds, {} blocks; every long-standing honest peer kept at least {} \
                     of {} honest feeds whole; {} Sybil blocks refused, {} evicted",
                    count(self.sybil_feeds as u64),
                    count(self.sybil_blocks as u64),
                    self.honest_feeds_kept_min,
                    self.honest_feeds,
                    count(self.sybil_blocks_refused),
                    count(self.sybil_blocks_evicted)
                ),
            ));
        }
        out.push_str("<h2>Summary</h2>\n<table id=\"summary\">\n");
        for (label, value) in rows {
            out.push_str(&format!("<tr><th>{label}</th><td>{value}</td></tr>\n"));
        }
        out.push_str("</table>\n");
        if !passed {
            out.push_str("<ul id=\"violations\">\n");
            for violation in &self.violations {
                out.push_str(&format!("<li>{}</li>\n", escape(violation)));
            }
            out.push_str("</ul>\n");
        }
    }

    fn convergence_svg(&self) -> String {
        if self.curve.is_empty() {
            return no_data(
                "convergence",
                "Convergence over time",
                "no honest peer came to hold every honest block",
            );
        }
        let end = self
            .curve
            .last()
            .map_or(0, |(t, _)| *t)
            .max(self.convergence_ms.max)
            .max(self.writing_ms)
            .max(1) as f64;
        let (step, x_max) = nice(end, 6);
        let plot = Plot::new((0.0, x_max), (0.0, 1.0));
        let mut svg = open("convergence", "Convergence over time");
        let y_ticks: Vec<(f64, String)> = (0..=4)
            .map(|i| (f64::from(i) / 4.0, format!("{}%", i * 25)))
            .collect();
        plot.axes(
            &mut svg,
            &ms_ticks(step, x_max),
            &y_ticks,
            "virtual time since the first honest block (ms)",
            "honest peers holding every block",
        );
        let mut points = format!("{:.1},{:.1}", plot.x(0.0), plot.y(0.0));
        let mut last = 0.0;
        for &(t, f) in &self.curve {
            let x = plot.x(t as f64);
            points.push_str(&format!(
                " {x:.1},{:.1} {x:.1},{:.1}",
                plot.y(last),
                plot.y(f)
            ));
            last = f;
        }
        points.push_str(&format!(" {:.1},{:.1}", plot.x(end), plot.y(last)));
        if self.writing_ms > 0 {
            let x = plot.x(self.writing_ms as f64);
            svg.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" \
                 stroke=\"#8c959f\" stroke-dasharray=\"5 4\"/>\n\
                 <text x=\"{tx:.1}\" y=\"{ty:.1}\" fill=\"#57606a\">last block written</text>\n",
                top = plot.y(1.0),
                bottom = plot.y(0.0),
                tx = x + 4.0,
                ty = plot.y(1.0) + 14.0,
            ));
        }
        svg.push_str(&format!(
            "<polyline class=\"data\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" \
             points=\"{points}\"/>\n</svg>"
        ));
        svg
    }

    fn bytes_svg(&self) -> String {
        let b = &self.bytes_per_peer;
        let kinds = [
            ("blocks", b.blocks),
            ("heads", b.heads),
            ("wants", b.wants),
            ("control", b.control),
            ("all bytes", b.total),
        ];
        if b.total.max == 0 {
            return no_data("bytes", "Bytes sent per peer", "no peer sent a byte");
        }
        // A logarithmic axis: one flooder's megabytes and a peer's few hundred bytes of wants
        // both stay readable. It spans whole powers of ten around every non-zero figure.
        let values = kinds.iter().flat_map(|(_, f)| [f.mean, f.max as f64]);
        let smallest = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        let low = smallest.log10().floor();
        let high = (b.total.max as f64).log10().ceil().max(low + 1.0);
        let plot = Plot::new((0.0, kinds.len() as f64), (low, high));
        let mut svg = open("bytes", "Bytes sent per peer by kind");
        let y_ticks: Vec<(f64, String)> = (low as i32..=high as i32)
            .map(|power| (f64::from(power), bytes(10f64.powi(power))))
            .collect();
        let x_ticks: Vec<(f64, String)> = kinds
            .iter()
            .enumerate()
            .map(|(i, (kind, _))| (i as f64 + 0.5, (*kind).to_string()))
            .collect();
        plot.axes(
            &mut svg,
            &x_ticks,
            &y_ticks,
            "kind of bytes",
            "bytes sent per peer (log scale)",
        );
        for (i, (_, figures)) in kinds.iter().enumerate() {
            for (j, (value, colour)) in [(figures.mean, "#0969da"), (figures.max as f64, "#9ec5fe")]
                .into_iter()
                .enumerate()
            {
                let x = plot.x(i as f64 + 0.14 + 0.36 * j as f64);
                let width = plot.x(0.36) - plot.x(0.0);
                let y = if value > 0.0 {
                    plot.y(value.log10())
                } else {
                    plot.y(low)
                };
                svg.push_str(&format!(
                    "<text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" \
                     font-size=\"10\">{label}</text>\n",
                    tx = x + width / 2.0,
                    ty = y - 4.0,
                    label = bytes(value),
                ));
                if value > 0.0 {
                    svg.push_str(&format!(
                        "<rect class=\"data\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" \
                         height=\"{h:.1}\" fill=\"{colour}\"/>\n",
                        h = plot.y(low) - y,
                    ));
                }
            }
        }
        let lx = W - RIGHT - 250.0;
        svg.push_str(&format!(
            "<rect x=\"{lx}\" y=\"8\" width=\"12\" height=\"12\" fill=\"#0969da\"/>\n\
             <text x=\"{t1}\" y=\"18\">mean per peer</text>\n\
             <rect x=\"{l2}\" y=\"8\" width=\"12\" height=\"12\" fill=\"#9ec5fe\"/>\n\
             <text x=\"{t2}\" y=\"18\">largest peer</text>\n</svg>",
            t1 = lx + 16.0,
            l2 = lx + 130.0,
            t2 = lx + 146.0,
        ));
        svg
    }

    fn delivery_svg(&self) -> String {
        let hist = &self.delivery_ms_histogram;
        let (Some(first), Some(last)) = (
            hist.counts.iter().position(|n| *n > 0),
            hist.counts.iter().rposition(|n| *n > 0),
        ) else {
            return no_data(
                "delivery",
                "Delivery times",
                "no peer received a block it did not write",
            );
        };
        // Buckets grow with the time (see `Histogram`): one bar each, equal widths, so the
        // axis is logarithmic. Only the span from the first to the last non-empty bucket.
        let buckets: Vec<(f64, f64, u64, String)> = (first..=last)
            .map(|i| {
                let label = format!("{} to {}", ms(hist.edges[i]), ms(hist.edges[i + 1]));
                (i as f64, (i + 1) as f64, hist.counts[i], label)
            })
            .collect();
        // Every edge gets a tick; 1 and 5 times a power of ten (and the first) a label.
        let x_ticks: Vec<(f64, String)> = (first..=last + 1)
            .map(|i| {
                let edge = hist.edges[i];
                let label = if i == first || round_edge(edge) {
                    ms(edge)
                } else {
                    String::new()
                };
                (i as f64, label)
            })
            .collect();
        histogram(
            "delivery",
            "Delivery times",
            &buckets,
            (first as f64, (last + 1) as f64),
            &x_ticks,
            "virtual time from a block's writing until a peer held it (log scale)",
        )
    }

    fn hops_svg(&self) -> String {
        let Some(last) = self.hop_histogram.iter().rposition(|n| *n > 0) else {
            return no_data("hops", "Hops", "no peer received a block it did not write");
        };
        // Hop 0 (a peer's own block) is never a delivery: the axis starts at hop 1.
        let first = 1.min(last);
        let buckets: Vec<(f64, f64, u64, String)> = (first..=last)
            .map(|h| {
                let label = format!("hop {h}");
                (h as f64 - 0.5, h as f64 + 0.5, self.hop_histogram[h], label)
            })
            .collect();
        let step = nice(last as f64, 12).0.max(1.0);
        let x_ticks: Vec<(f64, String)> = (first..=last)
            .filter(|h| (*h as f64 % step) == 0.0 || *h == first)
            .map(|h| (h as f64, h.to_string()))
            .collect();
        histogram(
            "hops",
            "Hops",
            &buckets,
            (first as f64 - 0.5, last as f64 + 0.5),
            &x_ticks,
            "hops from the block's writer",
        )
    }

    fn rejections_table(&self, out: &mut String) {
        out.push_str(
            "<h2>Rejections</h2>\n<p>What the honest peers refused, summed over them. Grey \
             rows did not happen in this run.</p>\n<table id=\"rejections\">\n<thead><tr>\
             <th>Refused</th><th>Count</th></tr></thead>\n<tbody>\n",
        );
        for (key, label, value) in rejection_rows(&self.rejections) {
            out.push_str(&format!(
                "<tr data-field=\"{key}\"{class}><td>{label}</td><td class=\"n\">{n}</td></tr>\n",
                class = if value == 0 { " class=\"zero\"" } else { "" },
                n = count(value),
            ));
        }
        out.push_str("</tbody>\n</table>\n");
    }
}

/// Every field of [`Rejections`]: its JSON name, a plain-English label and its value.
fn rejection_rows(r: &Rejections) -> [(&'static str, &'static str, u64); 11] {
    [
        (
            "invalid_signature",
            "Forged blocks (bad signature or key)",
            r.invalid_signature,
        ),
        ("too_large", "Blocks over the body size limit", r.too_large),
        (
            "invalid_other",
            "Other invalid blocks (bad link to the parent, time before the parent's)",
            r.invalid_other,
        ),
        (
            "malformed_messages",
            "Messages that did not decode (malformed, or over the message size limit)",
            r.malformed_messages,
        ),
        (
            "forks",
            "Forks found (one per peer that found a fork proof)",
            r.forks,
        ),
        (
            "frozen",
            "Blocks refused because a fork froze their feed",
            r.frozen,
        ),
        (
            "state_rejected",
            "Blocks the application's rules rejected in the current state",
            r.state_rejected,
        ),
        (
            "disconnects",
            "Connections dropped because a peer sent too many invalid blocks or messages",
            r.disconnects,
        ),
        (
            "duplicates",
            "Duplicate arrivals (already held; each cost a lookup)",
            r.duplicates,
        ),
        (
            "over_capacity",
            "Blocks refused because the store was full and their feed ranked last",
            r.over_capacity,
        ),
        (
            "tombstoned",
            "Blocks refused because their feed was evicted a short while ago",
            r.tombstoned,
        ),
    ]
}

/// A titled figure: the plot and its caption.
fn figure(out: &mut String, title: &str, svg: &str, caption: &str) {
    out.push_str(&format!(
        "<h2>{title}</h2>\n<figure>\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>\n"
    ));
}

fn per_peer(figures: PerPeer, show: fn(f64) -> String) -> String {
    format!(
        "mean {}, largest {}",
        show(figures.mean),
        show(figures.max as f64)
    )
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BytesPerPeer, Histogram, Percentiles};
    use crate::{Scenario, Simulation};

    fn small_run() -> Report {
        let scenario = Scenario::from_toml(
            r#"
            name = "html"
            peers = 8
            [workload]
            senders = "all"
            blocks_per_sender = 2
            "#,
        )
        .expect("valid scenario");
        Simulation::new(scenario)
            .expect("builds")
            .run()
            .expect("runs")
    }

    /// The text of the `<svg id="ID">` element.
    fn svg<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html
            .find(&format!("<svg id=\"{id}\""))
            .unwrap_or_else(|| panic!("no svg {id}"));
        let end = start + html[start..].find("</svg>").expect("svg closed");
        &html[start..end]
    }

    #[test]
    fn a_hostile_scenario_name_is_escaped() {
        let mut report = small_run();
        report.scenario = "<script>alert('x')</script>&\"".to_string();
        report.violations = vec!["<img src=x onerror=alert(1)>".to_string()];
        report.reproduce = "blockend sim '<script>'".to_string();
        let html = report.html();
        assert!(!html.contains("<script"), "unescaped script tag");
        assert!(!html.contains("<img"), "unescaped violation");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }

    #[test]
    fn empty_data_renders_no_data_plots() {
        let mut report = small_run();
        report.curve.clear();
        report.converged_peers = 0;
        report.convergence_ms = Percentiles::default();
        report.bytes_per_peer = BytesPerPeer::default();
        report.hop_histogram.clear();
        report.delivery_ms = Percentiles::default();
        report.delivery_ms_histogram = Histogram::default();
        let html = report.html();
        for id in ["convergence", "bytes", "delivery", "hops"] {
            let plot = svg(&html, id);
            assert!(plot.contains(">no data<"), "{id} does not say no data");
            assert!(!plot.contains("class=\"data\""), "{id} draws data");
            assert!(
                !plot.contains("NaN") && !plot.contains("inf"),
                "{id}: {plot}"
            );
        }
        assert!(html.contains("no peer converged"));
    }

    #[test]
    fn a_real_run_draws_every_plot() {
        let html = small_run().html();
        for (id, least) in [
            ("convergence", 1),
            ("bytes", 4),
            ("delivery", 1),
            ("hops", 1),
        ] {
            let plot = svg(&html, id);
            let drawn = plot.matches("class=\"data\"").count();
            assert!(drawn >= least, "{id}: {drawn} shapes");
            assert!(!plot.contains("no data") && !plot.contains("NaN"), "{id}");
        }
        assert!(html.contains("<table id=\"rejections\">"));
        assert!(html.contains("<span class=\"pass\">passed</span>"));
    }

    #[test]
    fn the_page_is_self_contained_and_deterministic() {
        let report = small_run();
        let html = report.html();
        assert_eq!(html, report.clone().html());
        for external in [
            "<script", "src=", "href=", "url(", "@import", "http:", "https:",
        ] {
            assert!(!html.contains(external), "page contains {external}");
        }
    }

    #[test]
    fn every_rejection_field_has_a_row() {
        let json = serde_json::to_value(Rejections::default()).expect("serialises");
        let mut fields: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut rows: Vec<&str> = rejection_rows(&Rejections::default())
            .iter()
            .map(|(key, _, _)| *key)
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, fields);
    }
}
