//! Name rules and "did you mean" suggestions.

/// What `check_store_name` accepts, as a regular expression (for the OpenAPI document).
pub const STORE_NAME_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_-]{0,62}$";

/// What `check_node_name` accepts, as a regular expression (for the OpenAPI document).
pub const NODE_NAME_PATTERN: &str = "^[a-z_][a-z0-9_]{0,62}$";

/// Data store names: 1-63 characters of `[A-Za-z0-9_-]`, starting with a letter.
pub fn check_store_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use 1-63 characters of letters, digits, '_' or '-', starting with a letter"
        ))
    }
}

/// Flow input names follow the data store rule.
pub fn check_flow_input_name(name: &str) -> Result<(), String> {
    check_store_name(name)
}

/// Source and transform names are what SQL refers to, so they must be plain lowercase SQL
/// identifiers: `[a-z_][a-z0-9_]*`, at most 63 characters. (Unquoted identifiers are lowercased
/// by the SQL engine, so allowing capitals would make `Orders` unreachable without quotes.)
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        return Ok(());
    }
    let hint = suggest_identifier(name)
        .map(|s| format!(" (try {s:?})"))
        .unwrap_or_default();
    Err(format!(
        "invalid name {name:?}: use 1-63 lowercase letters, digits or '_', not starting with a digit{hint}"
    ))
}

fn suggest_identifier(name: &str) -> Option<String> {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s.truncate(63);
    (!s.is_empty() && s != name).then_some(s)
}

/// The closest candidate to `wanted`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted_lower = wanted.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (c, strsim::jaro_winkler(&wanted_lower, &c.to_lowercase())))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// The " (did you mean \"orders\"?)" that follows an unknown name in a message, or nothing when
/// no candidate is close.
pub fn did_you_mean_hint<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(wanted, candidates)
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn store_names() {
        assert!(check_store_name("shop_db").is_ok());
        assert!(check_store_name("a-1").is_ok());
        assert!(check_store_name("1abc").is_err());
        assert!(check_store_name("").is_err());
        assert!(check_store_name(&"a".repeat(64)).is_err());
        assert!(check_store_name("has space").is_err());
    }

    #[test]
    fn node_names_must_be_lowercase_identifiers() {
        assert!(check_node_name("stg_orders").is_ok());
        assert!(check_node_name("_x1").is_ok());
        let err = check_node_name("Stg-Orders").unwrap_err();
        assert!(err.contains("try \"stg_orders\""), "{err}");
        assert!(check_node_name("9lives").is_err());
    }

    /// Names to try a pattern and its validator on: edges of length, case, digits first,
    /// punctuation, non-ASCII letters, and a trailing newline (which `$` must not let through).
    pub(crate) fn name_samples() -> Vec<String> {
        let mut samples: Vec<String> = [
            "",
            "a",
            "A",
            "_",
            "-",
            "9",
            "a9",
            "_x1",
            "shop_db",
            "a-1",
            "Stg-Orders",
            "stg_orders",
            "has space",
            "é",
            "aé",
            "a.b",
            "a\n",
            "a$",
            "1abc",
            "ab\u{0}",
            "Z_-z",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [62, 63, 64] {
            samples.push("a".repeat(n));
            samples.push(format!("_{}", "b".repeat(n - 1)));
        }
        samples
    }

    #[test]
    fn the_patterns_accept_exactly_what_the_checks_accept() {
        let store = regex::Regex::new(STORE_NAME_PATTERN).unwrap();
        let node = regex::Regex::new(NODE_NAME_PATTERN).unwrap();
        for name in name_samples() {
            assert_eq!(store.is_match(&name), check_store_name(&name).is_ok(), "{name:?}");
            assert_eq!(node.is_match(&name), check_node_name(&name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn suggestions_pick_near_misses_only() {
        assert_eq!(did_you_mean("ordrs", ["orders", "customers"]), Some("orders"));
        assert_eq!(did_you_mean("zzz", ["orders", "customers"]), None);
        assert_eq!(
            did_you_mean_hint("ordrs", ["orders", "customers"]),
            " (did you mean \"orders\"?)"
        );
        assert_eq!(did_you_mean_hint("zzz", ["orders"]), "");
    }
}
