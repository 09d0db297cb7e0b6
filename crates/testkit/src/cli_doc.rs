//! Checks a command's reference table in `docs/configuration.md` against
//! the command's own definitions, as its `--help` prints them: every flag
//! and environment variable is in the table, and every flag the table
//! names exists. The doc cannot drift from the CLI.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Checks every command of `binary` (its subcommands, each a section
/// headed ``## `<name> <subcommand>` ``; or, without subcommands, one
/// section headed ``## `<name>` ``) against `doc`. Panics naming what is
/// missing or stale.
pub fn check(binary: &Path, name: &str, doc: &str) {
    let help = run(binary, &["--help"]);
    let commands = subcommands(&help);
    if commands.is_empty() {
        check_command(binary, &[], &format!("`{name}`"), doc);
    }
    for command in &commands {
        check_command(binary, &[command], &format!("`{name} {command}`"), doc);
    }
}

fn check_command(binary: &Path, command: &[&str], heading: &str, doc: &str) {
    let mut args = command.to_vec();
    args.push("--help");
    let help = run(binary, &args);
    // A command with subcommands (dead-letters): their options together.
    let mut helps = vec![help.clone()];
    for sub in subcommands(&help) {
        let mut args = command.to_vec();
        args.extend([sub.as_str(), "--help"]);
        helps.push(run(binary, &args));
    }
    let (mut flags, mut vars) = (BTreeSet::new(), BTreeSet::new());
    for help in &helps {
        let (f, v) = options(help);
        flags.extend(f);
        vars.extend(v);
    }
    let section = section(doc, heading);
    for flag in &flags {
        assert!(
            section.contains(&format!("`{flag}`")),
            "docs/configuration.md, {heading}: {flag} is missing"
        );
    }
    for var in &vars {
        assert!(
            section.contains(&format!("`{var}`")),
            "docs/configuration.md, {heading}: {var} is missing"
        );
    }
    for flag in documented_flags(section) {
        assert!(
            flags.contains(&flag),
            "docs/configuration.md, {heading} documents {flag}, which the command does not have"
        );
    }
}

fn run(binary: &Path, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed",
        binary.display()
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The subcommands a `--help` lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The long flags and environment variables a `--help` defines.
fn options(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut flags = BTreeSet::new();
    let mut vars = BTreeSet::new();
    for line in help.lines() {
        // Options start at most six spaces in; their descriptions further.
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if indent <= 6 && trimmed.starts_with('-') {
            let flag = trimmed
                .split([' ', ','])
                .find(|word| word.starts_with("--"))
                .filter(|word| {
                    word.len() > 2
                        && word[2..]
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                .map(str::to_string);
            if let Some(flag) = flag.filter(|f| f != "--help" && f != "--version") {
                flags.insert(flag);
            }
        }
        if let Some((_, rest)) = line.split_once("[env: ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            vars.insert(name);
        }
    }
    (flags, vars)
}

/// The part of the document under `## <heading>` (e.g. ``## `labrelay up` ``).
pub fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let heading = format!("## {heading}");
    let start = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"));
    let rest = &doc[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// The flags a section's tables name (first column).
fn documented_flags(section: &str) -> BTreeSet<String> {
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `--"))
        .filter_map(|rest| rest.split('`').next())
        .map(|flag| format!("--{flag}"))
        .collect()
}
