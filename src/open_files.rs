//! The process's open-file limit, which bounds how many connections the listeners can
//! hold. Many systems start services with a soft limit of 1024 and a far higher hard
//! limit (systemd: 1024 / 524288); the soft limit is raised to the hard one at start, as
//! Go programs and nginx do, and the default `server.max_connections` is derived from
//! what results.

/// File descriptors kept for everything but client connections: the log database, its
/// readers, the config watcher, health checks, stdio.
const RESERVED: u64 = 128;

/// The default cap when the limit allows it: far more clients than an Ollama server
/// sees, few enough that their buffers stay in tens of MB.
const DEFAULT_CAP: usize = 4096;

/// The default cap never goes below this, however low the limit.
const SMALLEST_DEFAULT_CAP: usize = 16;

/// Raises the soft open-file limit to the hard limit where allowed and returns the soft
/// limit in force afterwards (`None`: unlimited or unknown).
#[allow(clippy::useless_conversion, reason = "rlim_t is not u64 everywhere")]
pub fn raise_soft_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit only reads the struct it is given. It can fail (macOS
            // refuses an unlimited soft limit); the old limit then stays.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        if limit.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        u64::try_from(limit.rlim_cur).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The default `server.max_connections` of each listener for an open-file limit. A
/// client connection can hold a backend connection too (2 descriptors), an admin one
/// only itself: with the same cap on both ports, 3 per cap plus the reserve must fit.
pub fn default_max_connections(limit: Option<u64>) -> usize {
    match limit {
        None => DEFAULT_CAP,
        Some(limit) => {
            let fitting = usize::try_from(limit.saturating_sub(RESERVED) / 3).unwrap_or(DEFAULT_CAP);
            fitting.clamp(SMALLEST_DEFAULT_CAP, DEFAULT_CAP)
        }
    }
}

/// Whether `max_connections` on both ports could run out of descriptors under `limit`.
pub fn too_many_for(max_connections: usize, limit: Option<u64>) -> bool {
    limit.is_some_and(|limit| (max_connections as u64).saturating_mul(3).saturating_add(RESERVED) > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_fits_the_limit() {
        assert_eq!(default_max_connections(None), 4096);
        assert_eq!(default_max_connections(Some(524_288)), 4096);
        assert_eq!(default_max_connections(Some(20_000)), 4096);
        // systemd's soft limit when the hard one cannot be reached.
        assert_eq!(default_max_connections(Some(1024)), 298);
        assert_eq!(default_max_connections(Some(256)), 42);
        assert_eq!(default_max_connections(Some(100)), 16);
        for limit in [256, 1024, 4096, 20_000] {
            assert!(
                !too_many_for(default_max_connections(Some(limit)), Some(limit)),
                "{limit}"
            );
        }
        assert!(too_many_for(4096, Some(1024)));
        assert!(!too_many_for(1_000_000, None));
    }

    #[test]
    #[allow(clippy::useless_conversion, reason = "rlim_t is not u64 everywhere")]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let after = raise_soft_limit();
        #[cfg(unix)]
        {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
            if limit.rlim_cur != libc::RLIM_INFINITY {
                assert_eq!(after, u64::try_from(limit.rlim_cur).ok());
            }
            #[cfg(target_os = "linux")]
            assert_eq!(limit.rlim_cur, limit.rlim_max);
        }
        #[cfg(not(unix))]
        assert_eq!(after, None);
    }
}
