//! Store paths on the file system: a file store's path resolved (through symlinks) and checked
//! against the allowed roots by `domain::paths`' rules.

use std::path::{Path, PathBuf};

use crate::domain::paths::{check_in_roots, check_no_parent_dir};

/// Resolves a store path to an absolute, symlink-free path inside one of `roots`. The path need
/// not exist yet (a target directory is created on first write), but its existing part is
/// resolved through symlinks so that a link cannot lead outside the roots.
pub fn resolve_in_roots(path: &str, roots: &[PathBuf]) -> Result<PathBuf, String> {
    check_no_parent_dir(path)?;
    let raw = Path::new(path);
    let absolute = if raw.is_absolute() {
        raw.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current directory: {e}"))?
            .join(raw)
    };
    let resolved = canonicalize_existing_prefix(&absolute)?;
    let roots: Vec<PathBuf> = roots.iter().filter_map(|root| root.canonicalize().ok()).collect();
    check_in_roots(path, &resolved, &roots)?;
    Ok(resolved)
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

#[cfg(test)]
mod tests {
    use super::*;

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
