//! The `ferry` command line (being written; see crates/ferry/src/lib.rs for the library).

fn main() {
    eprintln!("ferry: the command line is not built yet; use the library");
    std::process::exit(2);
}
