//! Secrets: client API keys (`auth`), the admin token, and values that must never be
//! printed.

use std::fmt;

use serde::Deserialize;

/// Client API keys for the Ollama port. No keys: open, as Ollama is.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub keys: Vec<ClientKey>,
    /// Networks whose clients need no key (e.g. the Home Assistant host).
    pub allow_unauthenticated_from: Vec<ipnet::IpNet>,
}

/// A client key, kept only as its SHA-256 so the config may hold either form.
#[derive(Clone)]
pub struct ClientKey {
    /// Recorded in each log row as `client_key`.
    pub id: String,
    pub sha256: [u8; 32],
}

impl ClientKey {
    /// Whether `token` is this key, compared as SHA-256 digests in constant time.
    pub fn matches(&self, token: &str) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        self.sha256.ct_eq(&digest).into()
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey {{ id: {:?}, sha256: \"***\" }}", self.id)
    }
}

/// `url` as it may be shown (errors, logs, the admin API): its password, and the values of
/// query parameters that look like credentials (`password`, `key`, `token`, `secret`,
/// `sig`...), replaced by `***`. The user name stays: it tells which account is used.
pub fn masked_url(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        ["pass", "key", "token", "secret", "sig", "auth", "credential"]
            .iter()
            .any(|word| name.contains(word))
    };
    if url.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.into()
}

/// A secret that never shows up in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    pub(super) keys: Vec<RawKey>,
    pub(super) allow_unauthenticated_from: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) id: String,
    /// The key itself, or `sha256:<64 hex>` of it.
    pub(super) key: String,
}

pub(super) fn auth(raw: RawAuth) -> Result<AuthConfig, String> {
    let mut keys: Vec<ClientKey> = Vec::new();
    for (i, key) in raw.keys.into_iter().enumerate() {
        if key.id.is_empty() {
            return Err(format!("auth.keys[{i}].id: must not be empty"));
        }
        if keys.iter().any(|k| k.id == key.id) {
            return Err(format!("auth.keys[{i}].id: '{}' is used twice", key.id));
        }
        keys.push(secret_key(&format!("auth.keys[{i}].key"), &key.id, &key.key)?);
    }
    let allow_unauthenticated_from = raw
        .allow_unauthenticated_from
        .iter()
        .enumerate()
        .map(|(i, net)| {
            net.parse::<ipnet::IpNet>()
                .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("auth.allow_unauthenticated_from[{i}]: '{net}' is not an address or CIDR network"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AuthConfig {
        keys,
        allow_unauthenticated_from,
    })
}

/// A key as written in the config: the key itself, or `sha256:<64 hex>` of it.
pub(super) fn secret_key(field: &str, id: &str, text: &str) -> Result<ClientKey, String> {
    use sha2::Digest;
    let sha256 = match text.strip_prefix("sha256:") {
        Some(hex) => {
            parse_sha256(hex).ok_or_else(|| format!("{field}: 'sha256:' must be followed by 64 hex digits"))?
        }
        None if text.len() < 8 => return Err(format!("{field}: too short (use at least 8 characters)")),
        None => sha2::Sha256::digest(text.as_bytes()).into(),
    };
    Ok(ClientKey {
        id: id.to_owned(),
        sha256,
    })
}

pub(super) fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
