//! Inline SVG charts (no script, no image request), axes titled and ticked: bars of one value per
//! day, and movements stacked above and below the axis.

use maud::{Markup, html};

/// The axis's top: the largest value rounded up to 2, 4 or 10 times a power of ten (even, so
/// the middle tick is a whole number too).
pub fn nice_top(max: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [2, 4, 10] {
            if m * step >= max {
                return m * step;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Plot area: left margin for the y labels, width and height of the bars' area.
const LEFT: i64 = 80;
const WIDTH: i64 = 960;
const HEIGHT: i64 = 160;

/// One series of a stacked chart: its name, colour, and one value per day (positive values stack
/// up, negative down).
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// Fill colour.
    pub color: &'a str,
    /// Value per day.
    pub values: Vec<i64>,
}

/// Bars (or stacks) for `days` labels, `series` stacked, titled `y_title` and `x_title`; amounts
/// shown through `label` (e.g. minor units as money).
pub fn stacked(
    days: &[String],
    series: &[Series<'_>],
    y_title: &str,
    x_title: &str,
    label: &dyn Fn(i64) -> String,
) -> Markup {
    let n = days.len().max(1) as i64;
    let slot = (WIDTH - LEFT) / n;
    let up: Vec<i64> = (0..days.len()).map(|d| series.iter().map(|s| s.values[d].max(0)).sum()).collect();
    let down: Vec<i64> = (0..days.len()).map(|d| series.iter().map(|s| (-s.values[d]).max(0)).sum()).collect();
    let (top_up, top_down) = (up.iter().copied().max().unwrap_or(0), down.iter().copied().max().unwrap_or(0));
    let top = nice_top(top_up.max(top_down).max(1));
    let (above, below) = (top_up > 0 || top_down == 0, top_down > 0);
    let span = i64::from(above) + i64::from(below);
    let zero = 10 + if above { HEIGHT / span } else { 0 };
    let scale = |v: i64| v * (HEIGHT / span) / top;
    let every = (days.len() / 8).max(1);
    html! {
        svg width="100%" viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 90) } role="img" aria-label=(y_title) {
            @for tick in ticks(above, below, top) {
                line x1=(LEFT) y1=(zero - scale(tick)) x2=(WIDTH) y2=(zero - scale(tick)) stroke="#e3e6ea" {}
                text x=(LEFT - 6) y=(zero - scale(tick) + 4) font-size="12" fill="#5b6472" text-anchor="end" { (label(tick)) }
            }
            @for r in rects(days, series, slot, zero, &scale, label) {
                rect x=(r.x) y=(r.y) width=(r.width) height=(r.height) fill=(r.color) { title { (r.title) } }
            }
            @for (d, day) in days.iter().enumerate().filter(|(d, _)| d % every == 0) {
                text x=(LEFT + 2 + d as i64 * slot) y=(HEIGHT + 36) font-size="12" fill="#5b6472" { (day) }
            }
            line x1=(LEFT) y1=(zero) x2=(WIDTH) y2=(zero) stroke="#9aa3b2" {}
            line x1=(LEFT) y1="10" x2=(LEFT) y2=(10 + HEIGHT) stroke="#9aa3b2" {}
            text x=(LEFT + (WIDTH - LEFT) / 2) y=(HEIGHT + 58) font-size="13" fill="#1d2330" text-anchor="middle" { (x_title) }
            text x="14" y=(10 + HEIGHT / 2) font-size="13" fill="#1d2330" text-anchor="middle"
                transform={ "rotate(-90 14 " (10 + HEIGHT / 2) ")" } { (y_title) }
            @if series.len() > 1 {
                @for (i, s) in series.iter().enumerate() {
                    rect x=(LEFT + i as i64 * 130) y=(HEIGHT + 72) width="12" height="12" fill=(s.color) {}
                    text x=(LEFT + 16 + i as i64 * 130) y=(HEIGHT + 82) font-size="12" fill="#1d2330" { (s.name) }
                }
            }
        }
    }
}

/// One bar of a stack.
struct Rect<'a> {
    x: i64,
    y: i64,
    width: i64,
    height: i64,
    color: &'a str,
    title: String,
}

/// The bars: per day, each series' value stacked up from the axis (positive) or down (negative).
fn rects<'a>(
    days: &[String],
    series: &[Series<'a>],
    slot: i64,
    zero: i64,
    scale: &dyn Fn(i64) -> i64,
    label: &dyn Fn(i64) -> String,
) -> Vec<Rect<'a>> {
    let mut out = Vec::new();
    for (d, day) in days.iter().enumerate() {
        let (mut up, mut down) = (zero, zero);
        for s in series {
            let v = s.values[d];
            if v == 0 {
                continue;
            }
            let height = scale(v.abs()).max(1);
            let y = if v > 0 {
                up -= height;
                up
            } else {
                down += height;
                down - height
            };
            let title = format!("{day}: {} {}", s.name, label(v.abs()));
            out.push(Rect {
                x: LEFT + 2 + d as i64 * slot,
                y,
                width: (slot - 3).max(1),
                height,
                color: s.color,
                title,
            });
        }
    }
    out
}

/// The y ticks: 0, half and the top on each side that has values.
fn ticks(above: bool, below: bool, top: i64) -> Vec<i64> {
    let mut out = vec![0];
    if above {
        out.extend([top / 2, top]);
    }
    if below {
        out.extend([-top / 2, -top]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_top_is_a_round_number_at_or_above_the_largest_count() {
        let tops: Vec<i64> = [0, 1, 2, 3, 7, 10, 11, 499, 501, 12_345].into_iter().map(nice_top).collect();
        assert_eq!(tops, [2, 2, 2, 4, 10, 10, 20, 1_000, 1_000, 20_000]);
    }

    #[test]
    fn stacks_go_up_and_down_from_one_axis_with_ticks_on_both_sides() {
        assert_eq!(ticks(true, true, 40), [0, 20, 40, -20, -40]);
        let days = vec!["03-01".to_owned(), "03-02".to_owned()];
        let series = [
            Series { name: "new", color: "#17803d", values: vec![3_000, 0] },
            Series { name: "churn", color: "#b42318", values: vec![0, -1_000] },
        ];
        let svg = stacked(&days, &series, "MRR moved", "day (UTC)", &|v| v.to_string()).into_string();
        assert_eq!(svg.matches("<rect").count(), 2 + 2, "one bar per non-zero value, and the legend");
        assert!(svg.contains(">MRR moved<") && svg.contains(">day (UTC)<") && svg.contains(">-4000<"));
    }
}
