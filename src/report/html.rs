//! The self-contained HTML report: one file, no network. The data travels as one JSON document
//! inside the page and the page's own script draws it, always through `textContent`, so text
//! from the logs can never become markup.

use super::ReportData;

const TEMPLATE: &str = include_str!("report.html");
const PLACEHOLDER: &str = "__HINDSIGHT_REPORT_DATA__";

/// Renders the report page.
pub fn render(data: &ReportData) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(data)?;
    // Inside <script>, "</" could close the element and "<!--" open a comment: escape both.
    let json = json.replace("</", "<\\/").replace("<!--", "<\\u0021--");
    Ok(TEMPLATE.replacen(PLACEHOLDER, &json, 1))
}
