//! Relative expiries made absolute at receipt.
//!
//! Redis before 7.0 propagates `EXPIRE`, `PEXPIRE`, `SETEX`, `PSETEX`, `SET ... EX|PX`, `GETEX ... EX|PX` and
//! `RESTORE` without `ABSTTL` to its replicas as they were called: a relative TTL that starts when the replica
//! runs it. Applied later (a lag, a spooled stream) or twice (a replay after a restart) it would keep the key
//! longer than the source does. ferry turns each into its absolute form (`PEXPIREAT`, `SET ... PXAT`,
//! `GETEX ... PXAT`, `RESTORE ... ABSTTL`) with the time the bytes arrived from the source. Redis 7.0 and later
//! already propagate absolute forms, so this changes nothing for them. `SET ... PXAT` and `GETEX` need a target
//! of 6.2 or newer.

use bytes::Bytes;

/// Rewrites a command with a relative expiry into its absolute form, relative to `received_ms` (Unix
/// milliseconds). Other commands, and arguments that do not parse (the target will refuse them as the source
/// would have), are left as they are.
pub(crate) fn make_expiry_absolute(argv: &mut Vec<Bytes>, received_ms: i64) {
    let Some(name) = argv.first() else { return };
    let name = name.to_ascii_lowercase();
    match name.as_slice() {
        b"expire" | b"pexpire" if argv.len() >= 3 => {
            let unit = if name == b"expire" { 1000 } else { 1 };
            if let Some(at) = absolute(&argv[2], unit, received_ms) {
                argv[0] = Bytes::from_static(b"PEXPIREAT");
                argv[2] = at;
            }
        }
        b"setex" | b"psetex" if argv.len() == 4 => {
            let unit = if name == b"setex" { 1000 } else { 1 };
            if let Some(at) = absolute(&argv[2], unit, received_ms) {
                let key = argv[1].clone();
                let value = argv[3].clone();
                *argv = vec![
                    Bytes::from_static(b"SET"),
                    key,
                    value,
                    Bytes::from_static(b"PXAT"),
                    at,
                ];
            }
        }
        b"set" => replace_option(argv, 3, received_ms),
        b"getex" => replace_option(argv, 2, received_ms),
        b"restore" | b"restore-asking" if argv.len() >= 4 => {
            let has_absttl = argv[4..].iter().any(|a| a.eq_ignore_ascii_case(b"absttl"));
            let ttl = parse(&argv[2]);
            if !has_absttl && ttl.is_some_and(|t| t > 0) {
                if let Some(at) = absolute(&argv[2], 1, received_ms) {
                    argv[2] = at;
                    argv.push(Bytes::from_static(b"ABSTTL"));
                }
            }
        }
        _ => {}
    }
}

/// Replaces an `EX <s>` or `PX <ms>` option at or after `from` with `PXAT <abs ms>`.
fn replace_option(argv: &mut [Bytes], from: usize, received_ms: i64) {
    let mut i = from;
    while i + 1 < argv.len() {
        let unit = if argv[i].eq_ignore_ascii_case(b"ex") {
            1000
        } else if argv[i].eq_ignore_ascii_case(b"px") {
            1
        } else {
            i += 1;
            continue;
        };
        if let Some(at) = absolute(&argv[i + 1], unit, received_ms) {
            argv[i] = Bytes::from_static(b"PXAT");
            argv[i + 1] = at;
        }
        return;
    }
}

fn parse(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// `received_ms + arg * unit`, as a decimal argument, unless it does not parse or overflows.
fn absolute(arg: &[u8], unit: i64, received_ms: i64) -> Option<Bytes> {
    let at = parse(arg)?.checked_mul(unit)?.checked_add(received_ms)?;
    Some(Bytes::from(at.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        let mut argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        make_expiry_absolute(&mut argv, 1_000_000);
        argv.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn relative_expiries_become_absolute_from_the_receipt_time() {
        assert_eq!(run(&["EXPIRE", "k", "10"]), ["PEXPIREAT", "k", "1010000"]);
        assert_eq!(
            run(&["pexpire", "k", "250", "NX"]),
            ["PEXPIREAT", "k", "1000250", "NX"]
        );
        assert_eq!(
            run(&["SETEX", "k", "2", "v"]),
            ["SET", "k", "v", "PXAT", "1002000"]
        );
        assert_eq!(
            run(&["PSETEX", "k", "7", "v"]),
            ["SET", "k", "v", "PXAT", "1000007"]
        );
        assert_eq!(
            run(&["SET", "k", "v", "NX", "ex", "3", "GET"]),
            ["SET", "k", "v", "NX", "PXAT", "1003000", "GET"]
        );
        assert_eq!(
            run(&["SET", "k", "v", "PX", "5"]),
            ["SET", "k", "v", "PXAT", "1000005"]
        );
        assert_eq!(
            run(&["GETEX", "k", "EX", "1"]),
            ["GETEX", "k", "PXAT", "1001000"]
        );
        assert_eq!(
            run(&["RESTORE", "k", "500", "payload", "REPLACE"]),
            ["RESTORE", "k", "1000500", "payload", "REPLACE", "ABSTTL"]
        );
    }

    #[test]
    fn absolute_or_unparsable_expiries_are_left_alone() {
        for args in [
            &["PEXPIREAT", "k", "5"][..],
            &["SET", "ex", "px"],
            &["SET", "k", "v", "PXAT", "9"],
            &["SET", "k", "v", "KEEPTTL"],
            &["GETEX", "k", "PERSIST"],
            &["RESTORE", "k", "0", "payload"],
            &["RESTORE", "k", "9", "payload", "ABSTTL"],
            &["EXPIRE", "k", "soon"],
            &["EXPIRE", "k", "9223372036854775807"],
        ] {
            assert_eq!(run(args), args, "{args:?}");
        }
    }
}
