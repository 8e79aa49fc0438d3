//! Environment variables in RedisShake v4 files.
//!
//! RedisShake 4 runs its configuration file through shell-style substitution before it reads the TOML (its
//! `shake_sync_env.toml` example holds `address = "${SHAKE_SRC_ADDRESS}"`), so a v4 file that works there must
//! work here. The forms are the shell's:
//!
//! | form | value |
//! |---|---|
//! | `$NAME`, `${NAME}` | the variable, empty when it is not set |
//! | `${NAME-word}` / `${NAME=word}` | `word` when the variable is not set |
//! | `${NAME:-word}` / `${NAME:=word}` | `word` when the variable is not set or empty |
//! | `${NAME+word}` / `${NAME:+word}` | `word` when the variable is set, else empty |
//! | `$$` | a literal `$` |
//!
//! `word` may itself hold variables. A `$` followed by anything else stays as it is. As in RedisShake, a variable
//! that is not set reads as empty; ferry adds a note naming it and its line, because an unset password or address
//! is rarely what the author meant. Only v4 files are substituted: RedisShake 3 and ferry's own files read values
//! as written (a password may hold a `$`).

use crate::error::Error;

/// `text` with its variables replaced, and one note per variable that was not set.
pub(crate) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), Error> {
    let mut out = String::with_capacity(text.len());
    let mut notes = Vec::new();
    for (n, l) in text.split_inclusive('\n').enumerate() {
        let line = n + 1;
        let mut unset = Vec::new();
        out.push_str(&expand_line(l, lookup, &mut unset).map_err(|m| {
            Error::config(format!("line {line}: {m} (RedisShake v4 files substitute environment variables; write `$$` for a literal `$`)"))
        })?);
        for name in unset {
            notes.push(format!(
                "line {line}: environment variable `{name}` is not set; read as empty"
            ));
        }
    }
    Ok((out, notes))
}

/// One line (a substitution never spans lines).
fn expand_line(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut plain = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&s[plain..i]);
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let close = matching_brace(b, i + 2)
                    .ok_or_else(|| format!("`{}` has no closing `}}`", s[i..].trim_end()))?;
                out.push_str(&braced(&s[i + 2..close], lookup, unset)?);
                i = close + 1;
            }
            Some(&c) if is_name(c) => {
                let end = name_end(b, i + 1);
                let name = &s[i + 1..end];
                out.push_str(&value(name, lookup, unset));
                i = end;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
        plain = i;
    }
    out.push_str(&s[plain..]);
    Ok(out)
}

/// `NAME`, `NAME-word`, `NAME:-word`, ... (what is between `${` and its `}`).
fn braced(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let b = inner.as_bytes();
    let end = name_end(b, 0);
    let name = &inner[..end];
    if name.is_empty() {
        return Err(format!(
            "`${{{inner}}}` does not start with a variable name"
        ));
    }
    let rest = &inner[end..];
    if rest.is_empty() {
        return Ok(value(name, lookup, unset));
    }
    let (colon, op, word) = match rest.as_bytes() {
        [b':', op @ (b'-' | b'=' | b'+'), ..] => (true, *op, &rest[2..]),
        [op @ (b'-' | b'=' | b'+'), ..] => (false, *op, &rest[1..]),
        _ => return Err(format!("`${{{inner}}}`: unknown operator after `{name}`")),
    };
    let current = lookup(name);
    let present = match (&current, colon) {
        (None, _) => false,
        (Some(v), true) => op == b'+' || !v.is_empty(),
        (Some(_), false) => true,
    };
    match (op, present) {
        (b'+', true) => expand_line(word, lookup, unset),
        (b'+', false) => Ok(String::new()),
        (_, true) => Ok(current.unwrap_or_default()),
        (_, false) => expand_line(word, lookup, unset),
    }
}

/// The variable's value, empty (and noted) when it is not set.
fn value(name: &str, lookup: &dyn Fn(&str) -> Option<String>, unset: &mut Vec<String>) -> String {
    lookup(name).unwrap_or_else(|| {
        if !unset.iter().any(|n| n == name) {
            unset.push(name.to_string());
        }
        String::new()
    })
}

fn is_name(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn name_end(b: &[u8], from: usize) -> usize {
    let mut end = from;
    while end < b.len() && is_name(b[end]) {
        end += 1;
    }
    end
}

/// The index of the `}` closing a `${` whose body starts at `from` (nested `${...}` in a default count).
fn matching_brace(b: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\n' => return None,
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ADDR" => Some("127.0.0.1:6379".into()),
            "EMPTY" => Some(String::new()),
            "PASS" => Some("s3cr$t".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> (String, Vec<String>) {
        expand(s, &env).unwrap()
    }

    #[test]
    fn plain_and_braced_variables_are_replaced() {
        assert_eq!(run("a = \"$ADDR\"").0, "a = \"127.0.0.1:6379\"");
        assert_eq!(run("a = \"${ADDR}x\"").0, "a = \"127.0.0.1:6379x\"");
        assert_eq!(run("$ADDR$ADDR").0, "127.0.0.1:6379127.0.0.1:6379");
    }

    #[test]
    fn a_value_is_not_substituted_again() {
        assert_eq!(run("p = \"$PASS\"").0, "p = \"s3cr$t\"");
    }

    #[test]
    fn defaults_follow_the_shell() {
        assert_eq!(run("${NOPE-d}").0, "d");
        assert_eq!(run("${EMPTY-d}").0, "");
        assert_eq!(run("${EMPTY:-d}").0, "d");
        assert_eq!(run("${NOPE:=d}").0, "d");
        assert_eq!(run("${ADDR:-d}").0, "127.0.0.1:6379");
        assert_eq!(run("${ADDR+set}").0, "set");
        assert_eq!(run("${NOPE+set}").0, "");
        assert_eq!(run("${NOPE:-${ADDR}}").0, "127.0.0.1:6379");
        assert_eq!(run("${NOPE:-$ADDR}").0, "127.0.0.1:6379");
        assert_eq!(run("${NOPE--1}").0, "-1");
        assert_eq!(
            run("u = \"${URL-http://localhost:8080}\"").0,
            "u = \"http://localhost:8080\""
        );
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar_and_a_lone_dollar_stays() {
        assert_eq!(run("a$$ADDR").0, "a$ADDR");
        assert_eq!(run("a$${ADDR}").0, "a${ADDR}");
        assert_eq!(run("cost $ 5 $").0, "cost $ 5 $");
        assert_eq!(run("x$-y").0, "x$-y");
    }

    #[test]
    fn an_unset_variable_reads_empty_with_a_note_naming_it_and_its_line() {
        let (out, notes) = run("a = 1\nb = \"${SHAKE_SRC}\"\nc = \"$SHAKE_SRC\"\n");
        assert_eq!(out, "a = 1\nb = \"\"\nc = \"\"\n");
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("line 2:") && notes[0].contains("`SHAKE_SRC`"));
        assert!(notes[1].starts_with("line 3:"));
    }

    #[test]
    fn an_unclosed_or_malformed_substitution_is_an_error_with_its_line() {
        let e = expand("a = 1\nb = \"${ADDR\"\n", &env).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = expand("b = \"${ADDR%x}\"", &env).unwrap_err();
        assert!(e.to_string().contains("unknown operator"), "{e}");
        let e = expand("b = \"${}\"", &env).unwrap_err();
        assert!(e.to_string().contains("variable name"), "{e}");
    }
}
