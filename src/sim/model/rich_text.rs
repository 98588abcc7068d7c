//! Asana rich text (`html_notes`, `html_text`, `html_description`): escaping plain text into it,
//! and the check Asana applies to rich text it is sent (well-formed XML wrapped in `<body>`, known
//! tags only) with the plain text that remains.
//!
//! Part of the model layer; imports only [`crate::sim::wire`] (for Asana's 400 on invalid input).

use crate::sim::wire::ApiError;

/// Escapes text for inclusion in Asana rich text (`html_notes`, `html_text`).
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Tags Asana accepts in rich text (its rich-text guide), plus the `<body>` root.
const RICH_TEXT_TAGS: &[&str] = &[
    "body",
    "strong",
    "em",
    "u",
    "s",
    "code",
    "ol",
    "ul",
    "li",
    "a",
    "blockquote",
    "pre",
    "h1",
    "h2",
    "hr",
    "img",
    "table",
    "tr",
    "td",
    "object",
];

/// Checks Asana rich text (`<body>…</body>`, well-formed, known tags) and returns its plain text.
/// Invalid input is a 400 naming `field`, as Asana answers.
pub fn rich_text_to_plain(html: &str, field: &str) -> Result<String, ApiError> {
    parse_rich_text(html).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field}: Rich text is not valid: it must be well-formed XML wrapped in a <body> tag, \
             using only supported tags"
        ))
    })
}

/// A minimal XML well-formedness check for rich text; `None` when invalid.
fn parse_rich_text(html: &str) -> Option<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut rest = html.trim();
    let mut seen_root = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let end = tag_end(after)?;
            let inner = &after[..end];
            rest = &after[end + 1..];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim();
                if stack.pop().as_deref() != Some(name) {
                    return None;
                }
                if stack.is_empty() {
                    // The root closed: only whitespace may follow.
                    return rest.trim().is_empty().then_some(text);
                }
                continue;
            }
            let self_closing = inner.ends_with('/');
            let inner = inner.trim_end_matches('/');
            let name: String = inner.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty() || !RICH_TEXT_TAGS.contains(&name.as_str()) {
                return None;
            }
            check_attributes(&inner[name.len()..])?;
            if stack.is_empty() {
                if seen_root || name != "body" {
                    return None;
                }
                seen_root = true;
            } else if name == "body" {
                return None;
            }
            if self_closing {
                if stack.is_empty() {
                    return rest.trim().is_empty().then_some(text);
                }
            } else {
                stack.push(name);
            }
        } else {
            if stack.is_empty() {
                return None;
            }
            let end = rest.find('<').unwrap_or(rest.len());
            text.push_str(&unescape(&rest[..end])?);
            rest = &rest[end..];
        }
    }
    None
}

/// Position of the `>` closing a tag, skipping quoted attribute values.
fn tag_end(after: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in after.char_indices() {
        match (quote, c) {
            (None, '>') => return Some(i),
            (None, '<') => return None,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    None
}

/// Attributes must be `name="value"` pairs.
fn check_attributes(mut rest: &str) -> Option<()> {
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(());
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:".contains(c))
        {
            return None;
        }
        let value = rest[eq + 1..].trim_start();
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let close = value[1..].find(quote)?;
        unescape(&value[1..1 + close])?;
        rest = &value[close + 2..];
    }
}

/// Resolves XML entities; `None` on a bare `&` or an unknown entity.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';')?;
        let entity = &after[..semi];
        let ch = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(ch);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rich_text_must_be_wrapped_well_formed_and_known() {
        assert_eq!(
            parse_rich_text("<body>Hi <strong>there</strong> &amp; all</body>").as_deref(),
            Some("Hi there & all")
        );
        assert_eq!(
            parse_rich_text(r#"<body><a href="https://x.test/?a=1&amp;b=2">l</a><hr/></body>"#)
                .as_deref(),
            Some("l")
        );
        for bad in [
            "plain text",
            "<p>not body</p>",
            "<body>unclosed",
            "<body><strong>crossed</body></strong>",
            "<body>a & b</body>",
            "<body><script>x</script></body>",
            "<body>a</body><body>b</body>",
            "<body>x</body> trailing",
        ] {
            assert!(parse_rich_text(bad).is_none(), "{bad} should be rejected");
        }
    }
}
