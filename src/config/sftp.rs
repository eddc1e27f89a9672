//! The `sftp://USER@HOST[:PORT]/PATH` url of an `[[offsite]]` target on a backup server
//! reached over SSH. Every part is checked here, before it reaches the `ssh` command line:
//! a user or host that starts with `-` would be read as an option, and a path with `..`
//! would leave the directory the operator named.

use std::fmt;

/// Where an SFTP target keeps its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpLocation {
    pub user: String,
    /// A host name, an IPv4 address, or an IPv6 address (without its brackets).
    pub host: String,
    pub port: u16,
    /// The directory on the server: absolute, without a trailing `/` (`/` itself aside).
    pub path: String,
}

impl SftpLocation {
    /// Parse the part of the url after `sftp://`.
    pub fn parse(rest: &str) -> Result<SftpLocation, String> {
        let example = "write sftp://USER@HOST[:PORT]/PATH, e.g. sftp://backup@backup-server/srv/backups/vertex-ar";
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => {
                return Err(format!(
                    "`sftp://{rest}` names no directory on the server: {example}"
                ));
            }
        };
        let Some((user, host_port)) = authority.rsplit_once('@') else {
            return Err(format!(
                "`sftp://{rest}` names no user (`USER@` before the host): {example}"
            ));
        };
        check_user(user)?;
        let (host, port) = split_port(host_port)?;
        check_host(host)?;
        let path = check_path(path)?;
        Ok(SftpLocation {
            user: user.to_string(),
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The host as `ssh` and `known_hosts` write it: `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        match self.port {
            22 => self.host.clone(),
            p => format!("[{}]:{p}", self.host),
        }
    }
}

impl fmt::Display for SftpLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "sftp://{}@{host}", self.user)?;
        if self.port != 22 {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}

/// A POSIX user name (what `useradd` accepts), never an option.
fn check_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{user}` is not a user name: 1–64 letters, digits, `.`, `_` and `-`, not starting with `-`"
        ))
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; port 22 when absent.
fn split_port(host_port: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!(
                "`{host_port}`: an IPv6 address needs its closing `]`"
            ));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("`{host_port}`: only `:PORT` may follow `]`")),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("`{p}` is not a port: 1–65535")),
        },
    };
    Ok((host, port))
}

/// A DNS name or an IP address, never an option.
fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{host}` is not a host: a name, an IPv4 address or an IPv6 address in brackets"
        ))
    }
}

/// Absolute, without `.`, `..` or empty segments inside; the trailing `/` dropped.
fn check_path(path: &str) -> Result<String, String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    let bad_segment = trimmed[1..]
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..");
    if bad_segment || trimmed.chars().any(char::is_control) {
        return Err(format!(
            "`{path}`: the directory on the server must be absolute, without `.`, `..`, `//` or control characters"
        ));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_their_parts_and_print_back() {
        let l = SftpLocation::parse("backup@backup-server/srv/backups/vertex-ar/").unwrap();
        assert_eq!(
            (l.user.as_str(), l.host.as_str(), l.port, l.path.as_str()),
            ("backup", "backup-server", 22, "/srv/backups/vertex-ar")
        );
        assert_eq!(
            l.to_string(),
            "sftp://backup@backup-server/srv/backups/vertex-ar"
        );
        assert_eq!(l.known_hosts_name(), "backup-server");
        let l = SftpLocation::parse("root@127.0.0.1:2222/x").unwrap();
        assert_eq!(
            (l.port, l.known_hosts_name()),
            (2222, "[127.0.0.1]:2222".into())
        );
        let l = SftpLocation::parse("u@[::1]:2200/").unwrap();
        assert_eq!(
            (l.host.as_str(), l.port, l.path.as_str()),
            ("::1", 2200, "/")
        );
        assert_eq!(l.to_string(), "sftp://u@[::1]:2200/");
    }

    #[test]
    fn what_ssh_could_read_as_an_option_or_a_way_out_is_refused() {
        for (url, says) in [
            ("-oProxyCommand=x@h/p", "not a user name"),
            ("u@-oProxyCommand=x/p", "not a host"),
            ("h/p", "names no user"),
            ("u@h", "names no directory"),
            ("u@h:0/p", "not a port"),
            ("u@h:99999/p", "not a port"),
            ("u@h/srv/../etc", "must be absolute"),
            ("u@h/srv//x", "must be absolute"),
            ("u@h x/p", "not a host"),
            ("u@[::1/p", "closing"),
        ] {
            let err = SftpLocation::parse(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
