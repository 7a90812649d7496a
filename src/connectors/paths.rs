//! Where a file store's reads may go: a file that a glob found, resolved through symlinks,
//! must stay inside its store's path (`domain::paths` holds the rule; this does the IO).

use std::path::{Path, PathBuf};

use super::ConnectorError;
use crate::domain::paths::check_file_in_root;

/// Checks that `file` (an existing file found by a glob) lies inside `root` once symlinks are
/// resolved; returns it resolved.
pub fn check_inside(file: &Path, root: &Path) -> Result<PathBuf, ConnectorError> {
    let canonical = |p: &Path| {
        p.canonicalize()
            .map_err(|e| ConnectorError::permanent_from(p.display(), e))
    };
    let resolved = canonical(file)?;
    let root = canonical(root)?;
    check_file_in_root(file, &resolved, &root).map_err(ConnectorError::permanent)?;
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_out_of_the_store_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let file = root.path().join("a.csv");
        std::fs::write(&file, "x\n1\n").unwrap();
        assert_eq!(
            check_inside(&file, root.path()).unwrap(),
            file.canonicalize().unwrap()
        );
        assert!(check_inside(&root.path().join("gone.csv"), root.path()).is_err());
        #[cfg(unix)]
        {
            let secret = outside.path().join("s.csv");
            std::fs::write(&secret, "x\n").unwrap();
            let link = root.path().join("link.csv");
            std::os::unix::fs::symlink(&secret, &link).unwrap();
            let err = check_inside(&link, root.path()).unwrap_err().message;
            assert!(err.ends_with("leads outside its store's path"), "{err}");
        }
    }
}
