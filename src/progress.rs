//! What `weft launch` shows while it waits: one redrawn line on a terminal, plain
//! lines (each change once) otherwise.
//!
//! Pure: [`Progress`] returns the text to write, so the rendering is tested without a
//! terminal; the caller writes it to stderr (stdout carries only the peer name).

/// Erase the line and return the cursor to its start.
const REDRAW: &str = "\r\x1b[2K";

/// The state of the progress display.
#[derive(Debug)]
pub struct Progress {
    redraw: bool,
    last: Option<String>,
}

impl Progress {
    /// `redraw`: the output is a terminal.
    pub fn new(redraw: bool) -> Progress {
        Progress { redraw, last: None }
    }

    /// The text to write to show `line` (empty if it is already shown).
    pub fn update(&mut self, line: &str) -> String {
        if self.last.as_deref() == Some(line) {
            return String::new();
        }
        self.last = Some(line.to_string());
        if self.redraw {
            format!("{REDRAW}weft: {line}")
        } else {
            format!("weft: {line}\n")
        }
    }

    /// The text that ends the display, before other output.
    pub fn finish(&mut self) -> String {
        if self.redraw && self.last.take().is_some() {
            "\n".to_string()
        } else {
            String::new()
        }
    }
}

/// What the launch waits for, from the router's report: the explicit targets not yet
/// established, and IPAM consensus. `None` once there is nothing left to wait for.
pub fn waiting_for(report: &router::status::Report) -> Option<String> {
    let rt = &report.router;
    let mut parts = Vec::new();
    let all: Vec<&String> = rt
        .targets
        .iter()
        .chain(rt.dns_targets.iter().map(|t| &t.address))
        .collect();
    let targets = all.len();
    let established = all
        .iter()
        .filter(|t| {
            rt.connections
                .iter()
                .any(|c| c.address == ***t && c.state == "established")
        })
        .count();
    if established < targets {
        let noun = if targets == 1 { "peer" } else { "peers" };
        let mut part = format!("connecting to {targets} {noun} ({established} established)");
        if let Some(err) = rt.connections.iter().find_map(|c| c.error.as_ref()) {
            part.push_str(&format!("; last error: {err}"));
        }
        parts.push(part);
    }
    if let Some((known, quorum)) = report.ipam.as_ref().and_then(|i| consensus(&i.status)) {
        parts.push(format!("awaiting IPAM consensus {known}/{quorum}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `awaiting consensus (quorum: Q, known: K)` -> (K, Q).
fn consensus(status: &str) -> Option<(u32, u32)> {
    let rest = status.strip_prefix("awaiting consensus (quorum: ")?;
    let (quorum, rest) = rest.split_once(", known: ")?;
    let known = rest.strip_suffix(')')?;
    Some((known.parse().ok()?, quorum.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redraws_on_a_terminal_and_prints_lines_otherwise() {
        let mut tty = Progress::new(true);
        assert_eq!(tty.update("a"), "\r\x1b[2Kweft: a");
        assert_eq!(tty.update("a"), "");
        assert_eq!(tty.update("b"), "\r\x1b[2Kweft: b");
        assert_eq!(tty.finish(), "\n");
        assert_eq!(tty.finish(), "");
        let mut pipe = Progress::new(false);
        assert_eq!(pipe.update("a"), "weft: a\n");
        assert_eq!(pipe.update("a"), "");
        assert_eq!(pipe.update("b"), "weft: b\n");
        assert_eq!(pipe.finish(), "");
    }

    #[test]
    fn reads_the_consensus_line() {
        assert_eq!(
            consensus("awaiting consensus (quorum: 3, known: 2)"),
            Some((2, 3))
        );
        assert_eq!(consensus("ready"), None);
    }
}
