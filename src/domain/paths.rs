//! File path rules: store paths must lie inside the configured allowed roots; source paths are
//! relative patterns that may not climb out of their store. Pure: the callers resolve paths on
//! the file system (`services` a store's path, `connectors` the files a glob found) and ask
//! these rules about the result.

use std::path::{Component, Path, PathBuf};

/// Checks a source path (relative, glob allowed): no absolute paths, no `..`.
pub fn check_relative_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let path = Path::new(pattern);
    if path.is_absolute() || pattern.starts_with('~') {
        return Err(format!("{pattern:?} must be relative to the store's path"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{pattern:?} may not contain '..'"));
    }
    glob::Pattern::new(pattern).map_err(|e| format!("{pattern:?} is not a valid glob: {e}"))?;
    Ok(())
}

/// Checks that store path `path` does not climb with `..` (before anything is resolved).
pub fn check_no_parent_dir(path: &str) -> Result<(), String> {
    if Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!("{path:?} may not contain '..'"));
    }
    Ok(())
}

/// Checks that `resolved` (store path `path`, absolute and symlink-free) lies inside one of
/// `roots` (resolved the same way).
pub fn check_in_roots(path: &str, resolved: &Path, roots: &[PathBuf]) -> Result<(), String> {
    if roots.iter().any(|root| resolved.starts_with(root)) {
        Ok(())
    } else {
        Err(format!(
            "{path:?} is outside the allowed roots (files.allowed_roots)"
        ))
    }
}

/// Checks that `resolved` (`file`, found by a glob, with symlinks resolved) lies inside its
/// store's path `root` (resolved the same way).
pub fn check_file_in_root(file: &Path, resolved: &Path, root: &Path) -> Result<(), String> {
    if resolved.starts_with(root) {
        Ok(())
    } else {
        Err(format!("{} leads outside its store's path", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_patterns() {
        assert!(check_relative_pattern("a/*.csv").is_ok());
        assert!(check_relative_pattern("/etc/passwd").is_err());
        assert!(check_relative_pattern("a/../../x").is_err());
        assert!(check_relative_pattern("[").is_err());
    }

    #[test]
    fn store_paths_may_not_climb() {
        assert!(check_no_parent_dir("/data/lake").is_ok());
        let err = check_no_parent_dir("/data/../etc").unwrap_err();
        assert_eq!(err, "\"/data/../etc\" may not contain '..'");
    }

    #[test]
    fn resolved_store_paths_must_lie_inside_a_root() {
        let roots = vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")];
        assert!(check_in_roots("b/x", Path::new("/srv/b/x"), &roots).is_ok());
        assert!(check_in_roots("a", Path::new("/srv/a"), &roots).is_ok());
        // A prefix of the text is not a path inside.
        let err = check_in_roots("/srv/ab", Path::new("/srv/ab"), &roots).unwrap_err();
        assert_eq!(
            err,
            "\"/srv/ab\" is outside the allowed roots (files.allowed_roots)"
        );
        assert!(check_in_roots("x", Path::new("/srv/a"), &[]).is_err());
    }

    #[test]
    fn resolved_files_must_lie_inside_their_store() {
        let root = Path::new("/srv/lake");
        assert!(check_file_in_root(Path::new("link.csv"), Path::new("/srv/lake/x/f.csv"), root).is_ok());
        let err =
            check_file_in_root(Path::new("/srv/lake/link.csv"), Path::new("/etc/passwd"), root).unwrap_err();
        assert_eq!(err, "/srv/lake/link.csv leads outside its store's path");
    }
}
