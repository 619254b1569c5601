//! Payload encryption: the whole conformance suite (and the lifecycle property test)
//! through `EncryptedStore` on SQLite, PostgreSQL (`ORCH_PG_URL`) and MySQL/MariaDB
//! (`ORCH_MYSQL_URL`); then, on each backend, what the tables hold read with plain SQL,
//! moved and altered ciphertexts, key rotation and plaintext rows from before.

mod sqlite {
    orch_tests::conformance_suite!(Some(orch_tests::harness::EncryptedHarness::new(
        orch_tests::harness::SqliteHarness::new()
    )));
}

mod pg {
    orch_tests::conformance_suite!(
        orch_tests::harness::ServerHarness::postgres().map(orch_tests::harness::EncryptedHarness::new),
        #[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
    );
}

mod mysql {
    orch_tests::conformance_suite!(
        orch_tests::harness::ServerHarness::mysql().map(orch_tests::harness::EncryptedHarness::new),
        #[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
    );
}

/// One test of a case of `orch_tests::encryption` on the harness `$make` evaluates to.
macro_rules! encryption_case {
    ($make:expr, [$(#[$attr:meta])*], $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $case() {
            let Some(harness) = $make else { return };
            orch_tests::encryption::$case(&harness).await;
        }
    };
}

/// Every case of `orch_tests::encryption` in module `$backend`.
macro_rules! all_encryption_cases {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        mod $backend {
            encryption_case!($make, [$(#[$attr])*], payloads_are_sealed_at_rest);
            encryption_case!($make, [$(#[$attr])*], moved_and_altered_payloads_do_not_open);
            encryption_case!($make, [$(#[$attr])*], rotated_keys_open_until_removed);
            encryption_case!($make, [$(#[$attr])*], plaintext_rows_from_before_still_run);
        }
    };
}

all_encryption_cases!(sqlite_cases, Some(orch_tests::harness::SqliteHarness::new()));
all_encryption_cases!(
    pg_cases,
    orch_tests::harness::ServerHarness::postgres(),
    #[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
);
all_encryption_cases!(
    mysql_cases,
    orch_tests::harness::ServerHarness::mysql(),
    #[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
);

/// A keyring with an empty, malformed or repeated key id, or a key of the wrong
/// length, is refused with `Error::InvalidConfig`.
#[test]
fn invalid_keyrings_are_refused() {
    use orch::Error;
    use orch::encryption::Keyring;
    let key = [9u8; 32];
    let invalid = |result: orch::Result<Keyring>, what: &str| match result {
        Err(Error::InvalidConfig(message)) => message,
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    };
    assert!(invalid(Keyring::new("", &key), "empty id").contains("empty"));
    invalid(Keyring::new("a:b", &key), "a separator in the id");
    invalid(Keyring::new("naïve", &key), "a non-ASCII id");
    invalid(Keyring::new(&"k".repeat(33), &key), "a long id");
    let ok = Keyring::new("k1", &key).unwrap();
    assert!(invalid(ok.clone().with_key("k1", &[1; 32]), "duplicate id").contains("twice"));
    for len in [0, 16, 31, 33, 64] {
        let message = invalid(Keyring::new("k1", &vec![0u8; len]), "wrong key length");
        assert!(message.contains(&format!("{len} bytes")), "{message}");
        invalid(ok.clone().with_key("k0", &vec![0u8; len]), "wrong length of an old key");
    }
    assert!(
        matches!(Keyring::key_from_base64("c2hvcnQ="), Err(Error::InvalidConfig(_))),
        "a short base64 key"
    );
    assert_eq!(ok.with_key("k0", &key).unwrap().key_ids().collect::<Vec<_>>(), ["k0", "k1"]);
}
