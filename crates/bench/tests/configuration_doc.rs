//! `docs/configuration.md`'s `labrelay-bench` table cannot drift from the
//! bench's own flags (see `labrelay_testkit::cli_doc`).

#[test]
fn every_flag_and_variable_of_the_bench_is_documented_and_nothing_else() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .expect("reading docs/configuration.md");
    labrelay_testkit::cli_doc::check(
        env!("CARGO_BIN_EXE_labrelay-bench").as_ref(),
        "labrelay-bench",
        &doc,
    );
}
