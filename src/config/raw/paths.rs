//! Paths in the config: `~` and `$VAR` expanded, `.` and `..` resolved without touching the
//! disk, compared as the usual file systems do.

use super::*;

pub(in crate::config) fn path_value(
    v: &Spanned<String>,
    ctx: &Ctx,
    key: &str,
    base: &Path,
) -> Result<PathBuf, ConfigError> {
    let raw = v.get_ref();
    if raw.trim().is_empty() {
        return Err(ctx.at(v, key, "path is empty"));
    }
    let expanded = expand(raw).map_err(|m| ctx.at(v, key, m))?;
    Ok(normalize(&base.join(expanded)))
}

/// Expand a leading `~` and every `$VAR` / `${VAR}` (`$$` is a literal `$`). An unset variable is
/// an error: silently expanding it to nothing would point at the wrong folder.
pub(super) fn expand(s: &str) -> Result<PathBuf, String> {
    let mut out = OsString::new();
    let mut rest = s;
    if let Some(after) = rest.strip_prefix('~') {
        if after.is_empty()
            || after.starts_with('/')
            || after.starts_with(std::path::MAIN_SEPARATOR)
        {
            let home = directories::BaseDirs::new()
                .map(|d| d.home_dir().to_path_buf())
                .ok_or("cannot find your home directory to expand ~; write the full path")?;
            out.push(home);
            rest = after;
        } else {
            return Err(format!(
                "\"{s}\": ~user is not supported; write the full path"
            ));
        }
    }
    while let Some(i) = rest.find('$') {
        out.push(&rest[..i]);
        let tail = &rest[i + 1..];
        let (name, next) = if let Some(braced) = tail.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("\"{s}\": missing }} after ${{"))?;
            (&braced[..end], &braced[end + 1..])
        } else if let Some(after) = tail.strip_prefix('$') {
            out.push("$");
            rest = after;
            continue;
        } else {
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            (&tail[..end], &tail[end..])
        };
        if name.is_empty() {
            // A `$` not followed by a name is just a character.
            out.push("$");
            rest = tail;
            continue;
        }
        match std::env::var_os(name) {
            Some(value) => out.push(value),
            None => {
                return Err(format!(
                    "environment variable {name} (in \"{s}\") is not set; set it, or write the \
                     path without it"
                ))
            }
        }
        rest = next;
    }
    out.push(rest);
    Ok(PathBuf::from(out))
}

/// Resolve `.` and `..` without touching the disk: folders need not exist yet.
pub(super) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Case-insensitive where the usual file systems are.
pub(super) fn fold(p: &Path) -> PathBuf {
    if cfg!(any(windows, target_os = "macos")) {
        PathBuf::from(p.to_string_lossy().to_lowercase())
    } else {
        p.to_path_buf()
    }
}

pub(super) fn same_path(a: &Path, b: &Path) -> bool {
    fold(a) == fold(b)
}

pub(super) fn same_or_inside(inner: &Path, outer: &Path) -> bool {
    fold(inner).starts_with(fold(outer))
}
