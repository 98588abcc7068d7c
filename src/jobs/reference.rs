//! The settings reference of the registered kinds, generated from their settings structs: the
//! JSON schema (`asana-worker jobs schema KIND`, for editors that validate TOML against a
//! schema) and the Markdown tables of docs/configuration.md (`--markdown`), which a test keeps
//! equal to the docs.

use crate::config::jobs::settings::{SettingDoc, schema_parts, setting_docs, tagged_tables};

use super::Kind;

/// One table of settings: a kind's own, or one sink type's.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsTable {
    /// What the table is for: `audit_log`, `audit_log [settings.sink] type = "file"`.
    pub title: String,
    /// Its settings, required first.
    pub settings: Vec<SettingDoc>,
}

/// The settings tables of `kind`: its own, then one per sink type it accepts. None for an
/// unknown kind.
pub fn tables(kind: &str) -> Option<Vec<SettingsTable>> {
    let schema = Kind::schema(kind)?;
    let (root, defs) = schema_parts(&schema);
    let mut tables = vec![SettingsTable {
        title: kind.to_string(),
        settings: setting_docs(&root, &defs),
    }];
    for (key, variant, variant_schema) in tagged_tables(&root, &defs) {
        tables.push(SettingsTable {
            title: format!("{kind} [settings.{key}] type = \"{variant}\""),
            settings: setting_docs(&variant_schema, &defs),
        });
    }
    Some(tables)
}

/// A settings table as Markdown, in the docs' format.
pub fn markdown(table: &SettingsTable) -> String {
    let mut text = String::from("| Setting | Type | Default | Meaning |\n|---|---|---|---|\n");
    for setting in &table.settings {
        let default = match &setting.default {
            None => "required".to_string(),
            Some(default) if default == "none" => "none".to_string(),
            Some(default) => format!("`{default}`"),
        };
        text.push_str(&format!(
            "| `{}` | {} | {default} | {} |\n",
            setting.name,
            setting.ty,
            capitalise(&setting.doc)
        ));
    }
    text
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}
