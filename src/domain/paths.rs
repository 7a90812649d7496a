//! File paths: store paths must resolve inside the configured allowed roots; source paths are
//! relative patterns that may not climb out of their store.

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

/// Resolves a store path to an absolute, symlink-free path inside one of `roots`. The path need
/// not exist yet (a target directory is created on first write), but its existing part is
/// resolved through symlinks so that a link cannot lead outside the roots.
pub fn resolve_in_roots(path: &str, roots: &[PathBuf]) -> Result<PathBuf, String> {
    let raw = Path::new(path);
    if raw.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{path:?} may not contain '..'"));
    }
    let absolute = if raw.is_absolute() {
        raw.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current directory: {e}"))?
            .join(raw)
    };
    let resolved = canonicalize_existing_prefix(&absolute)?;
    let inside = roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .any(|root| resolved.starts_with(&root));
    if inside {
        Ok(resolved)
    } else {
        Err(format!(
            "{path:?} is outside the allowed roots (files.allowed_roots)"
        ))
    }
}

/// Canonicalizes the longest existing ancestor and appends the rest unchanged.
fn canonicalize_existing_prefix(path: &Path) -> Result<PathBuf, String> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(canonical) => {
                let mut out = canonical;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(_) => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    return Err(format!("{} cannot be resolved", path.display()));
                };
                rest.push(name);
                if !existing.pop() {
                    return Err(format!("{} cannot be resolved", path.display()));
                }
            }
        }
    }
}

/// Checks that `file` (an existing file found by a glob) lies inside `root` once symlinks are
/// resolved.
pub fn check_inside(file: &Path, root: &Path) -> Result<PathBuf, String> {
    let resolved = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    if resolved.starts_with(&root) {
        Ok(resolved)
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
    fn store_paths_stay_inside_roots_even_through_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let roots = vec![root.path().to_path_buf()];
        let inside = root.path().join("data");
        std::fs::create_dir(&inside).unwrap();
        assert_eq!(
            resolve_in_roots(inside.to_str().unwrap(), &roots).unwrap(),
            inside.canonicalize().unwrap()
        );
        let not_yet = root.path().join("out/new");
        assert!(resolve_in_roots(not_yet.to_str().unwrap(), &roots).is_ok());
        assert!(resolve_in_roots(outside.path().to_str().unwrap(), &roots).is_err());
        assert!(resolve_in_roots(&format!("{}/../x", root.path().display()), &roots).is_err());
        #[cfg(unix)]
        {
            let link = root.path().join("escape");
            std::os::unix::fs::symlink(outside.path(), &link).unwrap();
            let err = resolve_in_roots(link.join("f.csv").to_str().unwrap(), &roots).unwrap_err();
            assert!(err.contains("outside the allowed roots"), "{err}");
        }
    }
}
