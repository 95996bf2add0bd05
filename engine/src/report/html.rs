//! The report as one self-contained HTML page: the stylesheet, the report
//! data (JSON) and `render.js` inlined; no network, no CDN, and a content
//! security policy that forbids loading anything, so it opens from disk
//! offline and shows the same as the browser annotation tool, which runs
//! the same `render.js` on the same data.

use super::ReportData;

/// The one renderer of the report's charts (plain browser JS, no modules):
/// `globalThis.MainReport.render(container, data, options)`.
pub const RENDER_JS: &str = include_str!("render.js");
/// The report's stylesheet (the annotation tool may include it too).
pub const REPORT_CSS: &str = include_str!("report.css");

/// `data` as JSON that is safe inside a `<script>` element: `<`, `>` and
/// `&` (which only occur inside strings) written as `\u` escapes.
pub fn data_json(data: &ReportData) -> String {
    let json = serde_json::to_string(data).expect("report data serializes");
    let mut out = String::with_capacity(json.len() + 64);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page: `<div id="main-report">` filled by `render.js` from the
/// `<script type="application/json" id="main-report-data">` element. The
/// same data gives the same bytes.
pub fn render_html(data: &ReportData) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>MAIN report: {title}</title>
<style>
{css}</style>
</head>
<body>
<div id="main-report"><noscript>This report draws its charts with JavaScript; the numbers are in the JSON below.</noscript></div>
<script type="application/json" id="main-report-data">{json}</script>
<script>
{js}</script>
<script>
MainReport.render(document.getElementById("main-report"), JSON.parse(document.getElementById("main-report-data").textContent), {{}});
</script>
</body>
</html>
"#,
        title = escape_text(&data.source),
        css = REPORT_CSS,
        json = data_json(data),
        js = RENDER_JS,
    )
}
