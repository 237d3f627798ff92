//! `NAME=VALUE` dimension options (`--cloudwatch-dimension`, `--azure-dimension`).
//!
//! Both clouds take a short list of name/value pairs that split a metric into
//! series; they differ only in their limits, so the parsing lives here once and each
//! sink passes its own [`Limits`].

/// What one cloud accepts, so that a bad dimension fails the start, not every report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most dimensions per metric.
    pub max_count: usize,
    /// Longest name, in characters.
    pub max_name: usize,
    /// Longest value, in characters.
    pub max_value: usize,
}

/// Parses every `NAME=VALUE` of `values`, in order. `option` is the flag name used in
/// error messages (`--cloudwatch-dimension`). The name is trimmed (a stray space is
/// never intended); the value is kept verbatim but must not be empty, because both
/// clouds reject empty dimension values.
pub(crate) fn parse(
    option: &str,
    values: &[String],
    limits: Limits,
) -> Result<Vec<(String, String)>, String> {
    if values.len() > limits.max_count {
        return Err(format!(
            "{option} is given {} times; at most {} dimensions are allowed",
            values.len(),
            limits.max_count
        ));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(values.len());
    for raw in values {
        let (name, value) = raw
            .split_once('=')
            .ok_or_else(|| format!("{option} must be NAME=VALUE (got '{raw}')"))?;
        let name = name.trim();
        if name.is_empty() || value.is_empty() {
            return Err(format!(
                "{option} needs a non-empty NAME and VALUE (got '{raw}')"
            ));
        }
        if name.chars().count() > limits.max_name {
            return Err(format!(
                "{option}: name '{name}' is longer than {} characters",
                limits.max_name
            ));
        }
        if value.chars().count() > limits.max_value {
            return Err(format!(
                "{option}: value of '{name}' is longer than {} characters",
                limits.max_value
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("{option}: dimension '{name}' is given twice"));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_count: 2,
        max_name: 5,
        max_value: 6,
    };

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_pairs_in_order_and_keeps_equals_in_values() {
        let dims = parse("--x-dimension", &strings(&[" Env =prod", "K=a=b"]), LIMITS).unwrap();
        assert_eq!(
            dims,
            vec![("Env".into(), "prod".into()), ("K".into(), "a=b".into())]
        );
    }

    #[test]
    fn rejects_bad_input_naming_the_option() {
        for bad in [
            &["novalue"][..],
            &["=v"],
            &["n="],
            &["toolong=v"],
            &["n=1234567"],
            &["a=1", "a=2"],
            &["a=1", "b=2", "c=3"],
        ] {
            let err = parse("--x-dimension", &strings(bad), LIMITS).unwrap_err();
            assert!(err.starts_with("--x-dimension"), "{err}");
        }
    }
}
