//! `docs/configuration.md` cannot drift from the CLI: every flag and every
//! environment variable each `labrelay` command defines (as its own `--help`
//! prints them) is in that command's table, and every flag the table names
//! exists.

use crate::LABRELAY;

#[test]
fn every_flag_and_variable_of_every_command_is_documented_and_nothing_else() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("reading docs/configuration.md");
    labrelay_testkit::cli_doc::check(LABRELAY.as_ref(), "labrelay", &doc);
}
