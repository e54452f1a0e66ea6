//! Checks on entity and collection names, which become parts of keys and tags.

/// Why `name` cannot be an entity or collection name, if it cannot.
pub(crate) fn problem(what: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{what} name must not be empty"));
    }
    if name.contains(':') {
        return Some(format!(
            "{what} name {name:?} must not contain ':' (it separates the entity from the id in keys and tags)"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Some(format!("{what} name {name:?} must not contain whitespace"));
    }
    None
}
