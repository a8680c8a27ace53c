//! The status web page (`GET /` on the status address): one self-contained HTML file.
//!
//! Inline CSS, script and SVG only; the page fetches nothing but `/report` from its own
//! origin (every few seconds) and changes nothing. It draws peers as nodes (name,
//! nickname, share of the IP range, traffic rates) and connections as edges coloured by
//! mode and state, marked encrypted or not. The HTTP layer sends a Content-Security-Policy
//! that forbids anything else ([`crate::http::CSP`]).

/// The page, embedded in the binary.
pub const PAGE: &str = include_str!("web/index.html");

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn self_contained_and_read_only() {
        // The only absolute URL is the SVG namespace, which is a name, not a fetch.
        let urls: Vec<&str> = PAGE
            .match_indices("http")
            .map(|(i, _)| &PAGE[i..(i + 40).min(PAGE.len())])
            .collect();
        assert!(
            urls.iter()
                .all(|u| u.starts_with("http://www.w3.org/2000/svg")),
            "{urls:?}"
        );
        for banned in [
            "src=", "<link", "@import", "url(", "method:", "POST", "<form",
        ] {
            assert!(
                !PAGE.contains(banned),
                "the page must not contain {banned:?}"
            );
        }
        assert_eq!(PAGE.matches("fetch(").count(), 1);
        assert!(PAGE.contains("fetch(\"/report\""));
    }
}
