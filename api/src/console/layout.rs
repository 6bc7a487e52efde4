//! The page around every page: the product's name, the log head, the navigation and the style.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::ConsoleState;

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:baseline}
header b{font-size:1.1rem} header a{color:#cfe0ff;text-decoration:none} header .head{margin-left:auto;color:#aab;font-size:.85rem}
main{padding:1rem;max-width:1100px;margin:auto} h1{font-size:1.3rem;margin:.2rem 0 1rem}
h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef0f3;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#fff;border:1px solid #e3e6ea;padding:.7rem;overflow:auto;white-space:pre-wrap;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:.7rem}
.panels{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:.7rem 1.2rem}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:.6rem .8rem}
.card .v{font-size:1.35rem;font-weight:600} .card .l{color:#5b6472;font-size:.8rem}
.ok{color:#17803d} .bad{color:#b42318} .bad a{color:inherit} .muted{color:#6b7280}
.wrap{overflow-x:auto} form.inline{display:inline} button{font:inherit;padding:.2rem .7rem;cursor:pointer}
input[type=search]{font:inherit;padding:.3rem .5rem;width:min(28rem,70vw)}
.more{margin:.8rem 0} .flash{background:#e8f5ec;border:1px solid #b7e1c3;padding:.5rem .8rem;margin-bottom:1rem}
tr.at-quota{background:#fdecea} tr.bad td{background:#fff6f5}
details summary{cursor:pointer;color:#3b6fd8;font-size:.8rem} details pre{max-height:28rem}
form{margin:.6rem 0}
";

/// The log head: position and when it was received (None on an empty log).
pub async fn head(state: &ConsoleState) -> sqlx::Result<Option<(i64, i64)>> {
    sqlx::query_as(
        "SELECT position, extract(epoch FROM received_at)::bigint FROM ledger.events ORDER BY position DESC LIMIT 1",
    )
    .fetch_optional(&state.pool)
    .await
}

/// `body` inside the page, titled `title`.
pub async fn page(state: &ConsoleState, title: &str, body: Markup) -> anyhow::Result<Markup> {
    let head = head(state).await?;
    Ok(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · stripe-ledger" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    b { "stripe-ledger" }
                    a href="/console" { "Overview" }
                    a href="/console/customers" { "Customers" }
                    a href="/console/revenue" { "Revenue" }
                    a href="/console/anomalies" { "Anomalies" }
                    a href="/console/effects" { "Failed effects" }
                    span.head {
                        @match head {
                            Some((position, at)) => { "log head " (position) " · " (super::time(at)) }
                            None => { "log empty" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    })
}

/// A link to the event at `position`.
pub fn event_link(position: i64) -> Markup {
    html! { a href={ "/console/event/" (position) } { (position) } }
}

/// A link to the customer page of `id`.
pub fn customer_link(id: &str) -> Markup {
    html! { a href={ "/console/customer?q=" (super::urlencode(id)) } { code { (id) } } }
}

/// A link to the subscription page of `id`.
pub fn subscription_link(id: &str) -> Markup {
    html! { a href={ "/console/subscription/" (super::urlencode(id)) } { code { (id) } } }
}

/// A link to the page of `subject` (`subject_type` `customer` or `subscription`; an event's id is
/// shown as text).
pub fn subject_link(subject_type: &str, subject: &str) -> Markup {
    match subject_type {
        "customer" => customer_link(subject),
        "subscription" => subscription_link(subject),
        _ => html! { code { (subject) } },
    }
}

/// `body` (JSON) pretty-printed, its keys in their order; as stored when it is not JSON.
pub fn pretty_json(body: &[u8]) -> String {
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut reader = serde_json::Deserializer::from_slice(body);
    let mut writer = serde_json::Serializer::pretty(&mut out);
    match serde_transcode::transcode(&mut reader, &mut writer) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_indented_in_their_own_key_order_and_non_json_is_kept() {
        let pretty = pretty_json(br#"{"id":"evt_1","data":{"object":{"z":1,"a":[true,null]}}}"#);
        assert_eq!(
            pretty,
            "{\n  \"id\": \"evt_1\",\n  \"data\": {\n    \"object\": {\n      \"z\": 1,\n      \"a\": [\n        true,\n        null\n      ]\n    }\n  }\n}"
        );
        assert_eq!(pretty_json(b"not json {"), "not json {");
    }
}
