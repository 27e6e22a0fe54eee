//! What is generated from the command-line definition in [`crate::cli`]:
//! shell completion scripts and the man page. Both come from the same
//! `clap::Command` as `--help`, so they cannot drift from it. Pure: the text
//! is returned, `main` prints it.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use crate::cli::Cli;

/// The name the scripts complete and the page documents: the binary's.
const BIN: &str = "dispatch";

/// The completion script for `shell`, to be sourced or installed as README
/// says.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
    out
}

/// The man page, dispatch(1), in roff: the top-level synopsis and options,
/// then a COMMANDS section with each subcommand's synopsis, description and
/// options, so one page holds everything `--help` says.
pub fn man_page() -> Vec<u8> {
    let mut cmd = Cli::command().bin_name(BIN);
    cmd.build();
    let man = Man::new(cmd.clone());
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let ok = "rendering to memory";
    man.render_title(&mut out).expect(ok);
    man.render_name_section(&mut out).expect(ok);
    man.render_synopsis_section(&mut out).expect(ok);
    man.render_description_section(&mut out).expect(ok);
    man.render_options_section(&mut out).expect(ok);
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        out.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
        let page = Man::new(sub.clone());
        let mut synopsis = Vec::new();
        page.render_synopsis_section(&mut synopsis).expect(ok);
        let mut description = Vec::new();
        page.render_description_section(&mut description).expect(ok);
        let mut options = Vec::new();
        page.render_options_section(&mut options).expect(ok);
        out.extend_from_slice(&body(&synopsis));
        out.extend_from_slice(b".PP\n");
        out.extend_from_slice(&body(&description));
        // Each option is a `.TP` paragraph of its own.
        out.extend_from_slice(&body(&options));
    }
    man.render_version_section(&mut out).expect(ok);
    out
}

/// A section clap_mangen rendered, without what makes it a section of the
/// page: inside COMMANDS a subcommand's synopsis, description and options
/// are paragraphs under its own `.SS` heading. Drops the `.SH` line and the
/// string definitions clap_mangen repeats before each section (`.ie \n(.g
/// .ds Aq`, `.el .ds Aq`; the page's title has them once).
fn body(roff: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(roff.len());
    for line in roff.split_inclusive(|&b| b == b'\n') {
        let heading = line.starts_with(b".SH ") || line == b".SH\n";
        let strings = line.ends_with(b".ds Aq \\(aq\n") || line.ends_with(b".ds Aq '\n");
        if !heading && !strings {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn body_is_a_section_without_heading_or_strings() {
        let roff = b".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.SH SYNOPSIS\n\\fBdispatch list\\fR\n";
        assert_eq!(text(body(roff)), "\\fBdispatch list\\fR\n");
        assert_eq!(text(body(b".SH\n.TP\nx")), ".TP\nx");
        assert_eq!(body(b""), b"");
    }

    #[test]
    fn man_page_has_one_title_and_each_subcommand_once() {
        let page = text(man_page());
        assert_eq!(page.matches(".TH ").count(), 1, "{page}");
        let sections: Vec<&str> = page.lines().filter(|l| l.starts_with(".SH ")).collect();
        assert_eq!(
            sections,
            [
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH DESCRIPTION",
                ".SH OPTIONS",
                ".SH COMMANDS",
                ".SH VERSION"
            ]
        );
        for sub in Cli::command().get_subcommands() {
            let heading = format!(".SS \"dispatch {}\"", sub.get_name());
            assert_eq!(page.matches(&heading).count(), 1, "{heading} in {page}");
        }
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_binary() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::PowerShell,
            Shell::Elvish,
        ] {
            let script = text(completions(shell));
            assert!(script.contains("dispatch"), "{shell}: {script}");
            assert!(script.contains("start"), "{shell}: {script}");
        }
    }
}
