//! Charts drawn on the server as SVG: no chart library to load, and the
//! numbers are in the page's text too (a `<title>` per bar and a label),
//! so tests and screen readers read the same figures people see.

use crate::page::esc;

/// One bar: a label, its value, and an optional second value drawn inside
/// it (for example confirmed out of received).
pub struct Bar {
    pub label: String,
    pub value: u64,
    pub inner: Option<u64>,
}

const WIDTH: u32 = 640;
const LABEL: u32 = 170;
const ROW: u32 = 28;

/// Horizontal bars scaled to the largest value; `id` names the chart for
/// tests (`data-chart`).
pub fn bars(id: &str, bars: &[Bar], inner_name: &str) -> String {
    if bars.is_empty() {
        return "<p class=\"empty\">Nothing yet.</p>".into();
    }
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let span = WIDTH - LABEL - 70;
    let height = ROW * bars.len() as u32 + 4;
    let mut svg = format!(
        "<svg class=\"chart\" data-chart=\"{id}\" role=\"img\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\">",
        id = esc(id)
    );
    for (n, bar) in bars.iter().enumerate() {
        let y = n as u32 * ROW + 2;
        let w = (bar.value as f64 / max as f64 * span as f64).round() as u32;
        let inner = bar.inner.map(|i| {
            let iw = (i as f64 / max as f64 * span as f64).round() as u32;
            format!(
                "<rect class=\"inner\" x=\"{LABEL}\" y=\"{y}\" width=\"{iw}\" height=\"{h}\"><title>{i} {name}</title></rect>",
                h = ROW - 8,
                name = esc(inner_name)
            )
        });
        let value = match bar.inner {
            Some(i) => format!("{i} / {}", bar.value),
            None => bar.value.to_string(),
        };
        svg.push_str(&format!(
            "<g data-bar=\"{label}\" data-value=\"{v}\"><text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text>\
             <rect class=\"outer\" x=\"{LABEL}\" y=\"{y}\" width=\"{w}\" height=\"{h}\"><title>{v}</title></rect>{inner}\
             <text x=\"{vx}\" y=\"{ty}\" class=\"value\">{value}</text></g>",
            label = esc(&bar.label),
            v = bar.value,
            lx = LABEL - 8,
            ty = y + ROW / 2 + 2,
            h = ROW - 8,
            inner = inner.unwrap_or_default(),
            vx = LABEL + w + 6,
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_carry_their_figures_and_escape_labels() {
        let svg = bars(
            "funnel",
            &[
                Bar {
                    label: "calls".into(),
                    value: 10,
                    inner: None,
                },
                Bar {
                    label: "<b>".into(),
                    value: 4,
                    inner: Some(2),
                },
            ],
            "confirmed",
        );
        assert!(svg.contains("data-bar=\"calls\" data-value=\"10\""));
        assert!(svg.contains("&lt;b&gt;"));
        assert!(svg.contains("2 / 4"));
        assert_eq!(bars("x", &[], ""), "<p class=\"empty\">Nothing yet.</p>");
    }
}
