//! Syntax checks for Kubernetes label keys and values, which the CRD schema cannot express for
//! the keys of a map; the operator reports violations as an `InvalidSpec` condition instead.

/// Checks a label key (`[prefix/]name`) and returns why it is invalid.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|e| format!("prefix '{prefix}' {e}"))?;
    }
    check_name(name).map_err(|e| format!("name '{name}' {e}"))
}

/// Checks a label value (may be empty).
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        check_name(value).map_err(|e| format!("'{value}' {e}"))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    let ok_edge = |c: char| c.is_ascii_alphanumeric();
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let first = name.chars().next().unwrap_or('-');
    let last = name.chars().last().unwrap_or('-');
    if !ok_edge(first) || !ok_edge(last) || !name.chars().all(ok_inner) {
        return Err("must start and end with a letter or digit and contain only [-_.a-zA-Z0-9]".into());
    }
    Ok(())
}

/// Checks an RFC 1123 DNS subdomain (lower case, dots between labels, at most 253 characters).
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for part in name.split('.') {
        let valid = !part.is_empty()
            && part.len() <= 63
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-');
        if !valid {
            return Err("must be a lower-case DNS subdomain".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_keys() {
        for key in [
            "app",
            "kubernetes.io/os",
            "node-role.kubernetes.io/agent",
            "topology.kubernetes.io/zone",
        ] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn names_what_is_wrong_with_a_bad_key() {
        assert!(check_key("Bad_Prefix/x").unwrap_err().contains("Bad_Prefix"));
        assert!(check_key("-x").unwrap_err().contains("'-x'"));
        assert!(check_key(&"a".repeat(64)).unwrap_err().contains("63"));
    }

    #[test]
    fn values_may_be_empty_but_not_malformed() {
        assert_eq!(check_value(""), Ok(()));
        assert_eq!(check_value("zone-1"), Ok(()));
        assert!(check_value("a b").is_err());
    }
}
