//! Tells the tests which database servers this build may use: `cfg(sluice_pg)` when
//! `SLUICE_TEST_POSTGRES_URL` is set, `cfg(sluice_mysql)` when `SLUICE_TEST_MYSQL_URL` is. Tests
//! that need a server are `#[cfg_attr(not(sluice_pg), ignore = "...")]`, so without it
//! `cargo test` reports them as ignored, with the reason, instead of passing them unrun. Nothing
//! else looks at these: the service itself is the same either way.

/// The variables and the cfg each one sets.
const SERVERS: &[(&str, &str)] = &[
    ("SLUICE_TEST_POSTGRES_URL", "sluice_pg"),
    ("SLUICE_TEST_MYSQL_URL", "sluice_mysql"),
];

fn main() {
    for (variable, cfg) in SERVERS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        let set = std::env::var(variable).is_ok_and(|v| !v.trim().is_empty());
        if set {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
