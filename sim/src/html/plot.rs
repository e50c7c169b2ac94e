//! Drawing for the HTML report's plots: the plotting area, axes with ticks, bars, "no data",
//! and the numbers on the axes.

/// Size of every plot, px.
pub(super) const W: f64 = 760.0;
pub(super) const H: f64 = 340.0;
/// Margins around the plotting area, px: room for tick labels and axis titles.
pub(super) const LEFT: f64 = 84.0;
pub(super) const RIGHT: f64 = 24.0;
pub(super) const TOP: f64 = 28.0;
pub(super) const BOTTOM: f64 = 58.0;

/// Maps data coordinates onto the plotting area.
pub(super) struct Plot {
    x_min: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Plot {
    /// A plot of `x_min..x_max` by `y_min..y_max` (an empty range is widened by one).
    pub(super) fn new((x_min, x_max): (f64, f64), (y_min, y_max): (f64, f64)) -> Self {
        Self {
            x_min,
            x_max: if x_max > x_min { x_max } else { x_min + 1.0 },
            y_min,
            y_max: if y_max > y_min { y_max } else { y_min + 1.0 },
        }
    }

    /// The pixel column of `v` on the x axis.
    pub(super) fn x(&self, v: f64) -> f64 {
        LEFT + (v - self.x_min) / (self.x_max - self.x_min) * (W - LEFT - RIGHT)
    }

    /// The pixel row of `v` on the y axis.
    pub(super) fn y(&self, v: f64) -> f64 {
        TOP + (1.0 - (v - self.y_min) / (self.y_max - self.y_min)) * (H - TOP - BOTTOM)
    }

    /// Grid lines, both axes, their ticks with labels, and the axis titles.
    pub(super) fn axes(
        &self,
        svg: &mut String,
        x_ticks: &[(f64, String)],
        y_ticks: &[(f64, String)],
        x_title: &str,
        y_title: &str,
    ) {
        let (x0, x1, y0) = (LEFT, W - RIGHT, self.y(self.y_min));
        for (v, label) in y_ticks {
            let y = self.y(*v);
            svg.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#eaeef2\"/>\n\
                 <line x1=\"{t:.1}\" y1=\"{y:.1}\" x2=\"{x0}\" y2=\"{y:.1}\" stroke=\"#1f2328\"/>\n\
                 <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>\n",
                t = x0 - 5.0,
                tx = x0 - 8.0,
                ty = y + 4.0,
            ));
        }
        for (v, label) in x_ticks {
            let x = self.x(*v);
            svg.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{t:.1}\" stroke=\"#1f2328\"/>\n\
                 <text x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{label}</text>\n",
                t = y0 + 5.0,
                ty = y0 + 19.0,
            ));
        }
        svg.push_str(&format!(
            "<line x1=\"{x0}\" y1=\"{y0:.1}\" x2=\"{x1}\" y2=\"{y0:.1}\" stroke=\"#1f2328\"/>\n\
             <line x1=\"{x0}\" y1=\"{y0:.1}\" x2=\"{x0}\" y2=\"{top:.1}\" stroke=\"#1f2328\"/>\n\
             <text x=\"{cx:.1}\" y=\"{by:.1}\" text-anchor=\"middle\">{x_title}</text>\n\
             <text transform=\"translate(16 {cy:.1}) rotate(-90)\" \
             text-anchor=\"middle\">{y_title}</text>\n",
            top = self.y(self.y_max),
            cx = (x0 + x1) / 2.0,
            by = H - 10.0,
            cy = (TOP + y0) / 2.0,
        ));
    }
}

/// A bar per bucket `(from, to, count, what it covers)` over `x_range`, counts on the y axis.
pub(super) fn histogram(
    id: &str,
    label: &str,
    buckets: &[(f64, f64, u64, String)],
    x_range: (f64, f64),
    x_ticks: &[(f64, String)],
    x_title: &str,
) -> String {
    let most = buckets.iter().map(|b| b.2).max().unwrap_or(0).max(1);
    let (step, y_max) = nice(most as f64, 5);
    let plot = Plot::new(x_range, (0.0, y_max));
    let mut svg = open(id, label);
    let y_ticks: Vec<(f64, String)> = steps(step.max(1.0), y_max).map(|v| (v, num(v))).collect();
    plot.axes(&mut svg, x_ticks, &y_ticks, x_title, "deliveries");
    for (from, to, n, what) in buckets.iter().filter(|b| b.2 > 0) {
        let (x, y) = (plot.x(*from), plot.y(*n as f64));
        svg.push_str(&format!(
            "<rect class=\"data\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" \
             fill=\"#0969da\" stroke=\"#fff\" stroke-width=\"0.5\"><title>{what}: {n}\
             </title></rect>\n",
            w = plot.x(*to) - x,
            h = plot.y(0.0) - y,
            what = super::escape(what),
            n = count(*n),
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Opens a plot's `<svg>` with a white background.
pub(super) fn open(id: &str, label: &str) -> String {
    format!(
        "<svg id=\"{id}\" role=\"img\" aria-label=\"{label}\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#1f2328\">\n\
         <rect width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\n"
    )
}

/// A plot that says "no data" and why.
pub(super) fn no_data(id: &str, label: &str, why: &str) -> String {
    format!(
        "{}<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"#f6f8fa\" \
         stroke=\"#d0d7de\"/>\n<text x=\"{cx}\" y=\"{cy}\" text-anchor=\"middle\" \
         font-size=\"18\" fill=\"#57606a\">no data</text>\n<text x=\"{cx}\" y=\"{cy2}\" \
         text-anchor=\"middle\" fill=\"#57606a\">{why}</text>\n</svg>",
        open(id, label),
        pw = W - LEFT - RIGHT,
        ph = H - TOP - BOTTOM,
        cx = (LEFT + W - RIGHT) / 2.0,
        cy = (TOP + H - BOTTOM) / 2.0,
        cy2 = (TOP + H - BOTTOM) / 2.0 + 22.0,
    )
}

/// A tick step of 1, 2 or 5 times a power of ten giving about `ticks` ticks up to `max`,
/// and the axis end: `max` rounded up to a multiple of the step.
pub(super) fn nice(max: f64, ticks: usize) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / ticks as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

/// 0, step, 2 step, ... up to `max`.
pub(super) fn steps(step: f64, max: f64) -> impl Iterator<Item = f64> {
    let n = (max / step).round() as u64;
    (0..=n).map(move |i| i as f64 * step)
}

/// Ticks at every `step` up to `max`, labelled with their value.
pub(super) fn ms_ticks(step: f64, max: f64) -> Vec<(f64, String)> {
    steps(step, max).map(|v| (v, num(v))).collect()
}

/// A tick value: an integer with thousands separators, or up to two decimals.
pub(super) fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        count(v.round() as u64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').to_string()
    }
}

/// Whether a bucket edge is 1 or 5 times a power of ten (or zero): the labelled ones.
pub(super) fn round_edge(edge: u64) -> bool {
    let mut e = edge;
    while e >= 10 && e.is_multiple_of(10) {
        e /= 10;
    }
    matches!(e, 0 | 1 | 5)
}

/// A duration given in ms, in ms below a second and in seconds above.
pub(super) fn ms(v: u64) -> String {
    if v < 1_000 {
        format!("{v} ms")
    } else {
        format!("{} s", num(v as f64 / 1_000.0))
    }
}

/// An integer with thousands separators.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A mean: an integer with separators when it is one, else one decimal.
pub(super) fn count_f(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        count(v.round() as u64)
    } else {
        format!("{v:.1}")
    }
}

/// The unit an axis up to `max` bytes is labelled in: (divisor, name).
pub(super) fn byte_unit(max: f64) -> (f64, &'static str) {
    [(1e9, "GB"), (1e6, "MB"), (1e3, "kB")]
        .into_iter()
        .find(|(div, _)| max >= *div)
        .unwrap_or((1.0, "B"))
}

/// A byte count in the largest decimal unit it reaches.
pub(super) fn bytes(v: f64) -> String {
    match byte_unit(v) {
        (_, "B") => format!("{} B", count_f(v)),
        (div, unit) => {
            let scaled = format!("{:.1}", v / div);
            format!("{} {unit}", scaled.trim_end_matches(".0"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round_and_cover_the_data() {
        assert_eq!(nice(0.0, 5), (0.2, 1.0));
        assert_eq!(nice(97.0, 5), (20.0, 100.0));
        assert_eq!(nice(1234.0, 6), (500.0, 1500.0));
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(bytes(1500.0), "1.5 kB");
        assert_eq!(bytes(12.0), "12 B");
    }
}
