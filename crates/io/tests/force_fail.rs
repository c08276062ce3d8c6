//! The `TICKWIRE_IO_FORCE_FAIL` test hook of `open`. Its own test binary, because it sets a
//! process-wide environment variable.

mod common;

use std::io;

use tickwire_io::{open, Config, Model, OpenError, FORCE_FAIL_ENV};

#[test]
fn forced_models_fail_with_permission_denied() {
    let models = common::models();
    let victim = models[0];
    std::env::set_var(
        FORCE_FAIL_ENV,
        format!(" {} ,kqueue", victim.as_str().to_uppercase()),
    );

    match open(victim, &Config::default()) {
        Err(OpenError::Io { model, error }) => {
            assert_eq!(model, victim);
            assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        }
        Err(e) => panic!("unexpected error {}", e),
        Ok(_) => panic!("{} opened despite {}", victim, FORCE_FAIL_ENV),
    }
    let err = open(victim, &Config::default()).err().unwrap();
    let text = err.to_string();
    assert!(text.contains(victim.as_str()), "{}", text);
    assert!(text.contains(FORCE_FAIL_ENV), "{}", text);
    assert_eq!(err.model(), victim);
    assert!(std::error::Error::source(&err).is_some());

    // Auto tries the forced model first on this platform: it falls back to the next candidate,
    // or, when the forced model was the last one (epoll, select; blocking without iocp),
    // reports its failure.
    match open(Model::Auto, &Config::default()) {
        Ok(io) => assert_ne!(io.model(), victim),
        Err(e) => assert_eq!(e.model(), victim, "auto: {}", e),
    }

    // Models not in the list still open.
    if let Some(&other) = models.get(1) {
        assert_eq!(open(other, &Config::default()).unwrap().model(), other);
    }
    // io_uring: the probe and open fail alike, and Auto falls back to epoll.
    if cfg!(target_os = "linux") {
        std::env::set_var(FORCE_FAIL_ENV, "io_uring");
        let err = tickwire_io::probe_io_uring().err().unwrap();
        assert_eq!(err.model(), Model::IoUring);
        assert!(err.to_string().contains(FORCE_FAIL_ENV), "{}", err);
        match open(Model::IoUring, &Config::default()) {
            Err(OpenError::Io { error, .. }) => {
                assert_eq!(error.kind(), io::ErrorKind::PermissionDenied)
            }
            other => panic!(
                "io_uring opened despite the hook: {:?}",
                other.map(|b| b.model())
            ),
        }
        assert_eq!(
            open(Model::Auto, &Config::default()).unwrap().model(),
            Model::Epoll
        );
        assert!(!tickwire_io::available_models().contains(&Model::IoUring));
    }
    std::env::set_var(FORCE_FAIL_ENV, "auto");
    assert_eq!(
        open(Model::Auto, &Config::default()).err().unwrap().model(),
        Model::Auto
    );

    std::env::remove_var(FORCE_FAIL_ENV);
    assert_eq!(open(victim, &Config::default()).unwrap().model(), victim);
}
