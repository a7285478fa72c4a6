//! Which web pages may call ollabridge (`server.allowed_origins`) and which host names the
//! admin listener answers to (`admin.allowed_hosts`): a page on any other site must not
//! run chats on the client port, nor read the log through a rebound DNS name.

/// Origins allowed by default, as Ollama allows them (its `OLLAMA_ORIGINS` defaults):
/// pages served from this machine, and desktop and editor apps.
const DEFAULT_ALLOWED_ORIGINS: &[&str] = &[
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
];

/// An origin pattern: the text before and after its one `*` (or all of it, exact).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    prefix: String,
    /// `None`: no wildcard, the origin is `prefix` exactly.
    suffix: Option<String>,
}

impl OriginPattern {
    fn new(pattern: &str) -> OriginPattern {
        let lower = pattern.to_ascii_lowercase();
        match lower.split_once('*') {
            Some((prefix, suffix)) => OriginPattern {
                prefix: prefix.to_owned(),
                suffix: Some(suffix.to_owned()),
            },
            None => OriginPattern {
                prefix: lower,
                suffix: None,
            },
        }
    }

    fn matches(&self, origin: &[u8]) -> bool {
        let prefix = self.prefix.as_bytes();
        match &self.suffix {
            None => origin.eq_ignore_ascii_case(prefix),
            Some(suffix) => {
                let suffix = suffix.as_bytes();
                origin.len() >= prefix.len() + suffix.len()
                    && origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                    && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// The origins whose pages may call the client port: Ollama's defaults plus
/// `server.allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins {
    patterns: Vec<OriginPattern>,
    /// `*` is configured: every origin passes.
    any: bool,
}

impl AllowedOrigins {
    /// Whether a request with this `Origin` header may pass.
    pub fn allows(&self, origin: &[u8]) -> bool {
        self.any || self.patterns.iter().any(|p| p.matches(origin))
    }
}

impl Default for AllowedOrigins {
    fn default() -> Self {
        AllowedOrigins {
            patterns: DEFAULT_ALLOWED_ORIGINS.iter().map(|p| OriginPattern::new(p)).collect(),
            any: false,
        }
    }
}

/// `server.allowed_origins`: `*` (any), or `scheme://host[:port]` with at most one `*`,
/// as Ollama's `OLLAMA_ORIGINS` takes them (`https://*.example.com`, `chrome-extension://*`).
pub(super) fn allowed_origins(entries: &[String]) -> Result<AllowedOrigins, String> {
    let mut allowed = AllowedOrigins::default();
    for (i, entry) in entries.iter().enumerate() {
        let bad = |why: &str| format!("server.allowed_origins[{i}]: '{entry}' {why}");
        if entry == "*" {
            allowed.any = true;
            continue;
        }
        let Some((scheme, rest)) = entry.split_once("://") else {
            return Err(bad(
                "is not an origin like https://app.example.com or * (scheme://host[:port])",
            ));
        };
        if scheme.is_empty() || rest.contains('/') || entry.contains(char::is_whitespace) || entry.contains(',') {
            return Err(bad(
                "is not an origin like https://app.example.com (scheme://host[:port], no path; one origin per entry)",
            ));
        }
        if entry.matches('*').count() > 1 {
            return Err(bad("has more than one '*'"));
        }
        allowed.patterns.push(OriginPattern::new(entry));
    }
    Ok(allowed)
}

/// Host names the admin listener answers to beyond loopback names, IP addresses and
/// `admin.host`: the names it is reached by (through a proxy, in a container network).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    names: Vec<String>,
    /// `*`: any host name.
    any: bool,
}

impl AllowedHosts {
    /// Whether a `Host` header's name (its port removed) is one of these.
    pub fn allows(&self, host: &str) -> bool {
        self.any || self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// `admin.allowed_hosts`: host names without scheme or port, or `*`.
pub(super) fn allowed_hosts(entries: &[String]) -> Result<AllowedHosts, String> {
    let mut allowed = AllowedHosts::default();
    for (i, entry) in entries.iter().enumerate() {
        if entry == "*" {
            allowed.any = true;
            continue;
        }
        let plain_name = !entry.is_empty()
            && entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !plain_name {
            return Err(format!(
                "admin.allowed_hosts[{i}]: '{entry}' is not a host name like dashboard.example.com \
                 (no scheme, no port) or *"
            ));
        }
        allowed.names.push(entry.clone());
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_ollamas() {
        let allowed = allowed_origins(&["https://*.example.com".into(), "chrome-extension://*".into()]).unwrap();
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "HTTPS://LOCALHOST:8443",
            "http://127.0.0.1:5173",
            "http://0.0.0.0:8080",
            "app://obsidian.md",
            "file://",
            "tauri://localhost",
            "vscode-webview://1abc",
            "vscode-file://vscode-app",
            "https://app.example.com",
            "chrome-extension://abcdef",
        ] {
            assert!(allowed.allows(ok.as_bytes()), "{ok}");
        }
        for refused in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example:80",
            "https://example.com",
            "http://app.example.com",
            "null",
            "",
        ] {
            assert!(!allowed.allows(refused.as_bytes()), "{refused}");
        }
        let any = allowed_origins(&["*".into()]).unwrap();
        assert!(any.allows(b"https://evil.example"));
    }
}
