//! The conformance suite and the lifecycle property test on SQLite.

mod sqlite {
    orch_tests::conformance_suite!(Some(orch_tests::harness::SqliteHarness::new()));
}
