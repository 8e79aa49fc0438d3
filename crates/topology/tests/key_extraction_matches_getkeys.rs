//! Key extraction against the server's own `COMMAND GETKEYS`, for every command in `COMMAND` (and every
//! subcommand on 7.0), with arguments generated from each command's arity and key specs.

mod common;

use std::collections::BTreeSet;

use ferry_testkit::{Server, ServerOptions, Version};
use ferry_topology::keys::BeginSearch;
use ferry_topology::{CommandInfo, CommandTable, Error};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Candidates tried per command.
const CANDIDATES: usize = 80;

/// Keywords that steer the server's built-in key finders (beyond the keywords in key specs).
fn extra_keywords(name: &str) -> &'static [&'static str] {
    match name {
        "sort" | "sort_ro" => &["BY", "LIMIT", "GET", "STORE", "ALPHA"],
        "migrate" => &["KEYS", "AUTH", "AUTH2", "COPY", "REPLACE", ""],
        "georadius" | "georadiusbymember" => &["STORE", "STOREDIST", "COUNT"],
        "xread" | "xreadgroup" => &["STREAMS", "BLOCK", "COUNT", "GROUP", "NOACK"],
        "memory" => &["USAGE", "DOCTOR"],
        "stralgo" => &["LCS", "KEYS", "STRINGS"],
        "set" => &["GET", "EX", "NX"],
        "bitfield" | "bitfield_ro" => &["GET", "SET", "INCRBY", "OVERFLOW"],
        _ => &[],
    }
}

/// Argument lists for `info` (name parts first): random fillers drawn from numbers (for key counts,
/// some malformed), the command's keywords, and position-unique words (so a key reported at the
/// wrong position shows).
fn candidates(info: &CommandInfo, rng: &mut ChaCha8Rng) -> Vec<Vec<Vec<u8>>> {
    let head: Vec<Vec<u8>> = info
        .name
        .split('|')
        .map(|p| p.as_bytes().to_vec())
        .collect();
    let base = info.name.split('|').next().unwrap_or_default();
    let mut keywords: Vec<String> = extra_keywords(base).iter().map(|s| s.to_string()).collect();
    for spec in info.key_specs.iter().flatten() {
        if let BeginSearch::Keyword { keyword, .. } = &spec.begin_search {
            keywords.push(keyword.clone());
        }
    }
    let numbers = [
        "0",
        "1",
        "2",
        "3",
        "1",
        "2",
        "-1",
        "2x",
        " 2",
        "999999999999",
    ];
    let min_len = info.arity.unsigned_abs() as usize;
    let mut out = Vec::new();
    for _ in 0..CANDIDATES {
        let len = if info.arity >= 0 {
            min_len
        } else {
            min_len + rng.gen_range(0..9)
        };
        let len = len.max(head.len());
        let mut argv = head.clone();
        for pos in head.len()..len {
            let roll: f64 = rng.gen();
            let arg = if roll < 0.3 {
                numbers[rng.gen_range(0..numbers.len())].to_string()
            } else if roll < 0.55 && !keywords.is_empty() {
                let k = &keywords[rng.gen_range(0..keywords.len())];
                if rng.gen_bool(0.5) {
                    k.to_ascii_lowercase()
                } else {
                    k.clone()
                }
            } else {
                format!("k{pos}")
            };
            argv.push(arg.into_bytes());
        }
        out.push(argv);
    }
    out
}

/// Every command and subcommand of the table, by name.
fn all_commands(table: &CommandTable) -> Vec<&CommandInfo> {
    let mut out: Vec<&CommandInfo> = Vec::new();
    for info in table.commands() {
        out.push(info);
        out.extend(info.subcommands.iter());
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What the server says the keys are: `Ok(names)` (an error meaning "no keys" gives an empty list),
/// or `Err(message)` for any other error.
fn server_keys(reply: &redis::Value) -> Result<Vec<Vec<u8>>, String> {
    match reply {
        redis::Value::Array(items) => Ok(items
            .iter()
            .map(|i| match i {
                redis::Value::BulkString(b) => b.clone(),
                other => format!("{other:?}").into_bytes(),
            })
            .collect()),
        redis::Value::ServerError(e) => {
            let text = format!("{} {}", e.code(), e.details().unwrap_or(""));
            if text.contains("Invalid arguments specified") || text.contains("no key arguments") {
                Ok(Vec::new())
            } else {
                Err(text)
            }
        }
        other => Err(format!("unexpected reply {other:?}")),
    }
}

fn show(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|a| format!("{:?}", String::from_utf8_lossy(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Report {
    commands: usize,
    with_keys: BTreeSet<String>,
    covered: BTreeSet<String>,
    mismatches: Vec<String>,
}

fn compare_with_server(version: Version) -> Report {
    let server = Server::start(ServerOptions::new(version)).expect("start server");
    let mut con = server.client();
    let reply = common::query(&mut con, &[b"COMMAND"]);
    let table = CommandTable::from_command_reply(&reply).expect("parse COMMAND");
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e75);
    let mut report = Report {
        commands: 0,
        with_keys: BTreeSet::new(),
        covered: BTreeSet::new(),
        mismatches: Vec::new(),
    };
    for info in all_commands(&table) {
        if !info.subcommands.is_empty() {
            continue; // a container: its subcommands are checked one by one
        }
        report.commands += 1;
        let candidates = candidates(info, &mut rng);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for argv in &candidates {
            pipe.cmd("COMMAND").arg("GETKEYS").arg(argv);
        }
        let replies: Vec<redis::Value> = pipe.query(&mut con).expect("COMMAND GETKEYS pipeline");
        let mut saw_keys = false;
        let mut all_match = true;
        let mut shown = 0;
        for (argv, reply) in candidates.iter().zip(&replies) {
            let expected = server_keys(reply);
            if expected
                .as_ref()
                .is_err_and(|e| e.contains("'command|getkeys'"))
            {
                // 7.0's GETKEYS needs an argument after the name: a command without arguments has no keys
                // and cannot be asked about.
                assert!(argv.len() == 1, "GETKEYS refused [{}]", show(argv));
                assert_eq!(
                    table.keys(argv).map(|k| k.len()).ok(),
                    Some(0),
                    "{}",
                    info.name
                );
                continue;
            }
            let ours: Result<Vec<Vec<u8>>, Error> = table
                .keys(argv)
                .map(|k| k.into_iter().map(<[u8]>::to_vec).collect());
            let same = match (&expected, &ours) {
                (Ok(e), Ok(o)) => e == o,
                (Err(e), Err(Error::UnknownCommand(_))) => e.contains("Invalid command"),
                (Err(e), Err(Error::WrongArity(_))) => e.contains("Invalid number of arguments"),
                _ => false,
            };
            if !same {
                all_match = false;
                shown += 1;
                if shown > 3 {
                    continue;
                }
                report.mismatches.push(format!(
                    "{version} {}: argv [{}]: server {:?}, ours {:?}",
                    info.name,
                    show(argv),
                    expected.as_ref().map(|k| show(k)),
                    ours.as_ref().map(|k| show(k))
                ));
            }
            if expected.is_ok_and(|k| !k.is_empty()) {
                saw_keys = true;
            }
        }
        if info.has_keys() {
            report.with_keys.insert(info.name.clone());
        }
        if saw_keys && all_match {
            report.covered.insert(info.name.clone());
        }
    }
    report
}

fn check(version: Version) {
    let report = compare_with_server(version);
    let uncovered: Vec<&String> = report.with_keys.difference(&report.covered).collect();
    eprintln!(
        "{version}: {} commands and subcommands; {} take keys; {} of them matched COMMAND GETKEYS on {} generated \
         argument lists each, with keys found; not covered: {:?}",
        report.commands,
        report.with_keys.len(),
        report.with_keys.intersection(&report.covered).count(),
        CANDIDATES,
        uncovered
    );
    assert!(
        report.mismatches.is_empty(),
        "{} mismatches:\n{}",
        report.mismatches.len(),
        report
            .mismatches
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        uncovered.is_empty(),
        "commands with keys for which no generated argument list had keys: {uncovered:?}"
    );
}

#[test]
fn key_extraction_equals_command_getkeys_for_every_command_on_7_0() {
    check(Version::V7_0);
}

#[test]
fn key_extraction_equals_command_getkeys_for_every_command_on_6_2() {
    check(Version::V6_2);
}

#[test]
fn key_extraction_equals_command_getkeys_for_every_command_on_8_2() {
    check(Version::V8_2);
}

#[test]
fn key_extraction_equals_command_getkeys_for_every_command_on_valkey_9_1() {
    check(Version::V9_1);
}
