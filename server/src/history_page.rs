//! The history page (issue 12): a static HTML page generated from the
//! published catalog ([`crate::catalog_doc::Document`]) into the same
//! directory, served by the deployed nginx beside cgit. No script, no CDN,
//! no server code: the charts are SVG written here, the colours live in a
//! separate stylesheet (the site's Content-Security-Policy allows no inline
//! style), and every name and detail is escaped ([`ferry_text::html_escape`]
//! after [`ferry_text::sanitize`]), so a hostile client's text stays text.
//!
//! * an overview: clients × sources, coloured by verdict
//!   (ok/late/small/missing/unexpected), with the last arrival;
//! * per source, a chart of size (points) and duration (line) over time,
//!   one point per stored artifact, late or missing sources marked.

use std::fmt::Write as _;
use std::path::Path;

use crate::catalog_doc::{Document, SourceDoc};

/// The page and its stylesheet, in the publish directory.
pub const PAGE: &str = "index.html";
pub const CSS: &str = "ferry-history.css";

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\n\
table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}\n\
.ok{background:#c8efc8}.late{background:#f6c26b}.small{background:#f3e27a}.missing{background:#f19a9a}\n\
.unexpected{background:#cfd8f3}.none{background:#eee}.drill.failed{background:#f19a9a}\n\
svg{border:1px solid #ccc;background:#fff}.size{fill:#2a6fdb}.duration{fill:none;stroke:#d9822b;stroke-width:1.5}\n\
.axis{stroke:#999}.label{font-size:11px;fill:#555}.mark{fill:#c0392b;font-size:12px}\n\
section{margin-bottom:2em}h2{font-size:1.1em}\n";

fn esc(s: &str) -> String {
    ferry_text::html_escape(&ferry_text::sanitize(s, 300))
}

/// The CSS class (and the word) of a source's verdict.
fn class(s: &SourceDoc) -> &'static str {
    s.verdict.map(|v| v.word()).unwrap_or("none")
}

/// Renders the page for `doc`.
pub fn render(doc: &Document) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Ferry backups on {node}</title><link rel=\"stylesheet\" href=\"{CSS}\"></head><body>\n\
         <h1>Backups on node {node}</h1>\n<p>Generated {gen} from <a href=\"catalog.json\">catalog.json</a>.</p>\n",
        node = esc(&doc.node),
        gen = doc.generated
    );
    h.push_str("<table id=\"overview\"><tr><th>client</th><th>source</th><th>verdict</th><th>cadence</th><th>last arrival</th><th>artifacts</th><th>last good drill</th></tr>\n");
    for c in &doc.clients {
        for s in &c.sources {
            let _ = writeln!(
                h,
                "<tr class=\"source {cls}\" data-client=\"{client}\" data-source=\"{source}\"><td>{client}</td>\
                 <td><a href=\"#{client}--{source}\">{source}</a></td><td>{cls}</td><td>{cad}</td><td>{last}</td><td>{n}</td><td class=\"drill {dcls}\">{drill}</td></tr>",
                cls = class(s),
                client = esc(&c.client),
                source = esc(&s.source),
                cad = esc(s.cadence.as_deref().unwrap_or("-")),
                last = s.last_arrival.map(|t| t.to_string()).unwrap_or_else(|| "never".into()),
                n = s.artifacts.len(),
                dcls = match &s.last_drill {
                    Some(d) if d.ok => "passed",
                    Some(_) => "failed",
                    None => "never",
                },
                drill = esc(s.last_good_drill.as_deref().unwrap_or("never"))
            );
        }
    }
    h.push_str("</table>\n");
    for c in &doc.clients {
        for s in &c.sources {
            let _ = writeln!(
                h,
                "<section id=\"{client}--{source}\"><h2>{client} / {source} <span class=\"{cls}\">{cls}</span></h2><p>{detail}</p>",
                client = esc(&c.client),
                source = esc(&s.source),
                cls = class(s),
                detail = esc(s.detail.as_deref().unwrap_or(""))
            );
            if let Some(d) = &s.last_drill {
                let _ = writeln!(
                    h,
                    "<p class=\"drill {}\">Last restore drill {}: {} in {} ms: {}</p>",
                    if d.ok { "passed" } else { "failed" },
                    esc(&d.at),
                    if d.ok { "passed" } else { "FAILED" },
                    d.duration_ms,
                    esc(&d.reason)
                );
            }
            h.push_str(&chart(s));
            h.push_str("</section>\n");
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// Size (points) and duration (line) over time, in a 720×200 SVG.
fn chart(s: &SourceDoc) -> String {
    const W: f64 = 720.0;
    const H: f64 = 200.0;
    const PAD: f64 = 40.0;
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"size and duration of {}\">",
        esc(&s.source)
    );
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{PAD}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/><line class=\"axis\" x1=\"{PAD}\" y1=\"10\" x2=\"{PAD}\" y2=\"{y}\"/>",
        y = H - PAD,
        x2 = W - 10.0
    );
    let a = &s.artifacts;
    if a.is_empty() {
        let _ = write!(svg, "<text class=\"mark\" x=\"{}\" y=\"{}\">no artifact stored</text>", PAD + 10.0, H / 2.0);
    } else {
        let t0 = a[0].received.as_second() as f64;
        let t1 = a[a.len() - 1].received.as_second() as f64;
        let span = (t1 - t0).max(1.0);
        let max_size = a.iter().map(|x| x.size).max().unwrap_or(1).max(1) as f64;
        let max_dur = a.iter().map(|x| x.duration_ms).max().unwrap_or(1).max(1) as f64;
        let x = |t: f64| if a.len() == 1 { (PAD + W - 10.0) / 2.0 } else { PAD + (t - t0) / span * (W - 10.0 - PAD) };
        let y = |v: f64, max: f64| (H - PAD) - v / max * (H - PAD - 10.0);
        let mut line = String::new();
        for p in a {
            let px = x(p.received.as_second() as f64);
            let _ = write!(
                svg,
                "<circle class=\"size\" cx=\"{px:.1}\" cy=\"{:.1}\" r=\"3\"><title>{} {} bytes, {} ms</title></circle>",
                y(p.size as f64, max_size),
                p.received,
                p.size,
                p.duration_ms
            );
            let _ = write!(line, "{px:.1},{:.1} ", y(p.duration_ms as f64, max_dur));
        }
        let _ = write!(svg, "<polyline class=\"duration\" points=\"{}\"/>", line.trim_end());
        let _ = write!(
            svg,
            "<text class=\"label\" x=\"{PAD}\" y=\"{}\">{}</text><text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <text class=\"label\" x=\"2\" y=\"14\">{} B max</text>",
            H - PAD + 16.0,
            a[0].received.strftime("%Y-%m-%d"),
            W - 10.0,
            H - PAD + 16.0,
            a[a.len() - 1].received.strftime("%Y-%m-%d"),
            max_size as u64
        );
    }
    if s.verdict.is_some_and(crate::cadence::Verdict::is_problem) {
        let _ = write!(
            svg,
            "<text class=\"mark verdict\" x=\"{}\" y=\"24\" text-anchor=\"end\">{}</text>",
            W - 14.0,
            class(s).to_uppercase()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes the page and its stylesheet into `dir` (each temp + rename).
pub fn write(dir: &Path, doc: &Document) -> anyhow::Result<()> {
    ferry_durable::write_synced_mode(dir, CSS, STYLE.as_bytes(), 0o644)?;
    ferry_durable::write_synced_mode(dir, PAGE, render(doc).as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cadence::Verdict;
    use crate::catalog_doc::{ArtifactDoc, ClientDoc};

    #[test]
    fn one_point_per_artifact_and_markup_stays_text() {
        let art = |t: &str, size| ArtifactDoc {
            received: t.parse().unwrap(),
            size,
            sha256: "0".repeat(64),
            duration_ms: 10,
            state: "stored".into(),
            node: None,
        };
        let doc = Document {
            schema: crate::catalog_doc::SCHEMA.into(),
            node: "n1".into(),
            generated: "2026-12-04T00:00:00Z".parse().unwrap(),
            clients: vec![ClientDoc {
                client: "web1".into(),
                sources: vec![SourceDoc {
                    source: "www".into(),
                    module: "fs".into(),
                    cadence: Some("1d".into()),
                    verdict: Some(Verdict::Late),
                    detail: Some("<script>alert(1)</script>".into()),
                    last_arrival: None,
                    artifacts: vec![art("2026-12-01T00:00:00Z", 5), art("2026-12-02T00:00:00Z", 7)],
                    last_drill: None,
                    last_good_drill: None,
                }],
            }],
        };
        let page = render(&doc);
        assert_eq!(page.matches("<circle class=\"size\"").count(), 2);
        assert!(page.contains("class=\"source late\""), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
        assert!(!page.contains("style="), "no inline style: the CSP forbids it");
    }
}
