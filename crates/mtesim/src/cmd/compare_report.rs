//! The HTML report of `mtesim compare --report FILE.html`: one
//! self-contained file for a design review (`docs/workloads.md` §4).
//!
//! # Contract
//! - One file, nothing fetched: inline CSS, plots as inline SVG drawn with
//!   the `plotters` crate's SVG backend, no script. A Content Security
//!   Policy that forbids every load but inline styles and `data:` images
//!   makes a browser report any reference that would need the network.
//! - What it holds: the exact command line and versions, the designs
//!   compared, a summary table over all inputs, then per input its table
//!   (the rows of `mtesim compare`) and three plots (tag storage lent to
//!   data over time, modelled cost by event kind, reservations,
//!   contiguous allocations and migrations), every plot with a title,
//!   axes with units and a legend; and the cost table used.
//! - Deterministic: the same comparison gives the same bytes (no date, no
//!   wall time).

use std::fmt::Write as _;

use plotters::prelude::*;
use uapi::Counter;

use super::compare::{Comparison, Input, Run, format_value, table_rows, thin};

/// Colours of the designs, by position (Okabe-Ito, readable by the colour
/// blind).
const DESIGN_COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// Colours of the cost kinds, in [`Counter::COST_KINDS`] order.
const KIND_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const WIDTH: u32 = 760;
const HEIGHT: u32 = 380;

fn design_colour(i: usize) -> RGBColor {
    DESIGN_COLOURS[i % DESIGN_COLOURS.len()]
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws with `draw` into an SVG string; a drawing error becomes a note in
/// the report instead of a plot (it cannot come from the input).
fn svg(
    title: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    let result = {
        let backend = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT));
        let root = backend.into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root));
        drawn.and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => format!(
            "<figure class=\"plot\" role=\"img\" aria-label=\"{}\">{out}</figure>",
            escape(title)
        ),
        Err(e) => format!(
            "<p class=\"error\">The plot “{}” could not be drawn: {}</p>",
            escape(title),
            escape(&e)
        ),
    }
}

/// Tag storage lent to data over time, one line per design.
fn lent_plot(input: &Input, designs: &[String], runs: &[Run]) -> String {
    let title = "Tag storage lent to data over time";
    svg(title, |root| {
        let max_x = runs
            .iter()
            .filter_map(|r| r.points.last().map(|p| p.x))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_x, 0f64..105f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(format!("{} replayed", input.kind.x_unit()))
            .y_desc("tag storage lent to data (%)")
            .x_label_formatter(&|x| format_value(*x, false))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (design, run)) in designs.iter().zip(runs).enumerate() {
            let total = run
                .points
                .last()
                .map_or(0, |p| {
                    p.lent(run.block_pages) + reserved_pages(p, run.block_pages)
                })
                .max(1) as f64;
            let colour = design_colour(i);
            let points: Vec<(f64, f64)> = thin(&run.points, 600)
                .iter()
                .map(|p| (p.x as f64, 100.0 * p.lent(run.block_pages) as f64 / total))
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(design.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())
    })
}

fn reserved_pages(p: &super::compare::Point, block_pages: u64) -> u64 {
    let pages = Counter::ALL
        .iter()
        .position(|c| *c == Counter::TagStoragePages)
        .map_or(0, |i| p.values[i]);
    pages - p.lent(block_pages)
}

/// The frame of a bar chart with one group per design on an `f64` axis
/// (design `i` at `i`) and values from 0 to `max`, titled `title`; the
/// caller configures the mesh and draws the bars.
fn design_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    designs: &[String],
    max: f64,
) -> Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    String,
> {
    let n = designs.len() as f64;
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..max)
        .map_err(|e| e.to_string())
}

/// The label of design `i` at `i` on a [`design_chart`]'s axis, nothing
/// between designs.
fn design_axis_label(designs: &[String]) -> impl Fn(&f64) -> String + '_ {
    move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < designs.len() {
            designs[i as usize].clone()
        } else {
            String::new()
        }
    }
}

/// Modelled cost by event kind: one stacked bar per design.
fn cost_plot(designs: &[String], runs: &[Run]) -> String {
    let title = "Modelled cost by event kind";
    svg(title, |root| {
        let stacks: Vec<Vec<f64>> = runs
            .iter()
            .map(|run| {
                Counter::COST_KINDS
                    .iter()
                    .map(|k| run.added(*k) as f64 / 1e6)
                    .collect()
            })
            .collect();
        let max = stacks
            .iter()
            .map(|s| s.iter().sum::<f64>())
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.6;
        let label = design_axis_label(designs);
        let mut chart = design_chart(root, title, designs, max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(designs.len().max(2))
            .x_label_formatter(&label)
            .x_desc("design")
            .y_desc("modelled cost (million cycles)")
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (k, kind) in Counter::COST_KINDS.iter().enumerate() {
            let colour = KIND_COLOURS[k % KIND_COLOURS.len()];
            let bars: Vec<Rectangle<(f64, f64)>> = stacks
                .iter()
                .enumerate()
                .filter(|(_, s)| s[k] > 0.0)
                .map(|(i, s)| {
                    let base: f64 = s[..k].iter().sum();
                    let x = i as f64;
                    Rectangle::new([(x - 0.3, base), (x + 0.3, base + s[k])], colour.filled())
                })
                .collect();
            if bars.is_empty() {
                continue;
            }
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(kind.name())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Reservations, contiguous allocations, failures and migrations: grouped
/// bars per design.
fn events_plot(designs: &[String], runs: &[Run]) -> String {
    let title = "Tag block reservations, contiguous allocations and migrations";
    let series = [
        (Counter::TagStorageReservations, "reservations"),
        (Counter::TagStorageContig, "contiguous allocations"),
        (Counter::TagStorageReserveFailures, "reservation failures"),
        (
            Counter::TagStorageMigrations,
            "migrations out of tag storage",
        ),
        (Counter::TagStorageReleases, "releases"),
    ];
    svg(title, |root| {
        let value = |run: &Run, counter: Counter| run.added(counter) as f64;
        let max = runs
            .iter()
            .flat_map(|r| series.iter().map(move |(c, _)| value(r, *c)))
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.6;
        let label = design_axis_label(designs);
        let mut chart = design_chart(root, title, designs, max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(designs.len().max(2))
            .x_label_formatter(&label)
            .y_label_formatter(&|y| {
                // Counts: no label between two integers.
                if (y - y.round()).abs() < 1e-9 {
                    format_value(*y, false)
                } else {
                    String::new()
                }
            })
            .x_desc("design")
            .y_desc("count during the run")
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        let width = 0.8 / series.len() as f64;
        for (k, (counter, name)) in series.iter().enumerate() {
            let colour = KIND_COLOURS[k % KIND_COLOURS.len()];
            let bars: Vec<Rectangle<(f64, f64)>> = runs
                .iter()
                .enumerate()
                .map(|(i, run)| {
                    let left = i as f64 - 0.4 + k as f64 * width;
                    Rectangle::new(
                        [(left, 0.0), (left + width * 0.9, value(run, *counter))],
                        colour.filled(),
                    )
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())
    })
}

const STYLE: &str = "
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1d2330;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2.2em; border-bottom: 2px solid #d9dde6; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.6em; }
.sub { color: #5b6475; margin-top: 0; }
pre, code { font: 13px/1.4 ui-monospace, 'SFMono-Regular', Menlo, monospace; }
pre { background: #f3f5f9; padding: .7em 1em; border-radius: 6px; overflow-x: auto; white-space: pre-wrap; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .8em; border-bottom: 1px solid #e4e7ee; }
th { text-align: left; background: #f3f5f9; }
td.num, th.num { text-align: right; }
tr.group td { font-weight: 600; background: #fafbfd; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure.plot { margin: 0; border: 1px solid #e4e7ee; border-radius: 6px; background: #fff; }
figure.plot svg { display: block; max-width: 100%; height: auto; }
.status-fail, .status-error { color: #b00020; font-weight: 600; }
.error { color: #b00020; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
dl.meta dt { color: #5b6475; }
dl.meta dd { margin: 0; }
";

/// A row's cells, one per run.
fn td(cells: &[String]) -> String {
    cells
        .iter()
        .map(|value| format!("<td class=\"num\">{value}</td>"))
        .collect()
}

/// The report.
pub fn html(c: &Comparison) -> String {
    let mut out = String::new();
    let designs_th: String = c
        .designs
        .iter()
        .map(|d| format!("<th class=\"num\">{}</th>", escape(d)))
        .collect();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>mtesim compare: {} input(s) under {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        c.inputs.len(),
        escape(&c.designs.join(", "))
    );
    let _ = write!(
        out,
        "<h1>MTE tag storage designs compared</h1>\n<p class=\"sub\">{} input(s) under {} design(s), \
         each on a fresh simulated machine. Cycles are modelled, not measured: see the cost table below.</p>\n",
        c.inputs.len(),
        c.designs.len()
    );
    let _ = writeln!(
        out,
        "<dl class=\"meta\"><dt>command</dt><dd><code>{}</code></dd>\
         <dt>version</dt><dd>mtesim {} (plots: plotters 0.3, SVG)</dd>\
         <dt>settings</dt><dd>{}</dd></dl>",
        escape(&c.command.join(" ")),
        env!("CARGO_PKG_VERSION"),
        if c.sets.is_empty() {
            "the default machine (docs/language.md §5)".to_owned()
        } else {
            escape(&c.sets.join(" "))
        }
    );
    out.push_str("<h2>Designs</h2>\n<table><tr><th>design</th><th>what it is</th></tr>\n");
    for name in &c.designs {
        let summary = platform::Design::by_name(name).map_or("", |d| d.summary());
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td></tr>",
            escape(name),
            escape(summary)
        );
    }
    out.push_str("</table>\n");

    // The summary over all inputs: the rows a reviewer reads first.
    let key_rows = [
        "lent_avg_pct",
        "lent_min",
        "reservations",
        "contig_allocs",
        "tag_storage_migrations",
        "tag_check_faults",
        "cost_total",
    ];
    let _ = write!(
        out,
        "<h2>Summary</h2>\n<table><tr><th>input</th><th>measure</th>{designs_th}</tr>\n"
    );
    for (input, runs) in c.inputs.iter().zip(&c.runs) {
        let _ = writeln!(
            out,
            "<tr class=\"group\"><td colspan=\"{}\">{} <span class=\"sub\">({})</span></td></tr>",
            c.designs.len() + 2,
            escape(&input.path.display().to_string()),
            escape(&input.what)
        );
        let table = table_rows(runs, "–");
        for key in key_rows {
            if let Some((_, label, cells)) = table.iter().find(|(k, _, _)| k == key) {
                let _ = writeln!(
                    out,
                    "<tr><td></td><td>{}</td>{}</tr>",
                    escape(label.trim()),
                    td(cells)
                );
            }
        }
    }
    out.push_str("</table>\n");

    for (input, runs) in c.inputs.iter().zip(&c.runs) {
        let _ = write!(
            out,
            "<h2>{}</h2>\n<p class=\"sub\">{}: <code>{}</code>{}</p>\n",
            escape(&input.path.display().to_string()),
            input.kind.name(),
            escape(&input.what),
            input
                .provenance
                .as_ref()
                .map_or(String::new(), |p| format!("; {}", escape(p)))
        );
        out.push_str("<div class=\"plots\">\n");
        out.push_str(&lent_plot(input, &c.designs, runs));
        out.push_str(&cost_plot(&c.designs, runs));
        out.push_str(&events_plot(&c.designs, runs));
        out.push_str("</div>\n");
        let _ = write!(
            out,
            "<h3>All measures</h3>\n<table><tr><th>measure</th>{designs_th}</tr>\n"
        );
        let status: String = runs
            .iter()
            .map(|r| format!("<td class=\"num status-{0}\">{0}</td>", r.status))
            .collect();
        let _ = writeln!(out, "<tr><td>status</td>{status}</tr>");
        let length: String = runs
            .iter()
            .map(|r| {
                format!(
                    "<td class=\"num\">{}</td>",
                    r.points
                        .last()
                        .map_or("–".to_owned(), |p| format_value(p.x as f64, false))
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>length ({})</td>{length}</tr>",
            input.kind.x_unit()
        );
        for (_, label, cells) in table_rows(runs, "–") {
            let _ = writeln!(out, "<tr><td>{}</td>{}</tr>", escape(&label), td(&cells));
        }
        out.push_str("</table>\n");
        for run in runs {
            if let Some(error) = &run.error {
                let _ = writeln!(
                    out,
                    "<p class=\"error\">{}: {}</p>",
                    escape(&run.design),
                    escape(error)
                );
            }
        }
    }

    out.push_str(
        "<h2>Cost table</h2>\n<p>Cycles charged for each event the kernel reports \
         (docs/cost-model.md gives each entry's source; <code>--cost FILE.toml</code> replaces entries).</p>\n\
         <table><tr><th>entry</th><th class=\"num\">cycles</th></tr>\n",
    );
    for (entry, cycles) in c.cost.entries() {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td></tr>",
            entry.name(),
            format_value(cycles as f64, false)
        );
    }
    out.push_str(
        "</table>\n<p class=\"sub\">Tag storage <em>lent to data</em> is the tag storage not \
         reserved for tags, which the page allocator may give to untagged data; \
         <em>holding data</em> is the part that does hold data now.</p>\n</body>\n</html>\n",
    );
    out
}
