//! Least privilege: the whole conformance suite (and the lifecycle property test) with
//! the library connected as `orch_app`, a role that may only read and write the
//! `orch` tables, on PostgreSQL (`ORCH_PG_URL`) and MySQL/MariaDB (`ORCH_MYSQL_URL`);
//! each store's tables are migrated by the owner (the URL's user), which then grants
//! the role its rights. And a proof that the role can do nothing more.

mod pg {
    orch_tests::conformance_suite!(
        orch_tests::harness::LeastPrivilegeHarness::postgres(),
        #[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
    );
}

mod mysql {
    orch_tests::conformance_suite!(
        orch_tests::harness::LeastPrivilegeHarness::mysql(),
        #[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
    );
}

/// As `orch_app` on PostgreSQL, DDL, the owner's other tables and applying a migration are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_pg, ignore = "ORCH_PG_URL is not set")]
async fn pg_role_is_limited() {
    let Some(harness) = orch_tests::harness::LeastPrivilegeHarness::postgres() else { return };
    orch_tests::privilege::role_is_limited(&harness).await;
}

/// As `orch_app` on MariaDB, DDL, the owner's other tables and applying a migration are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(orch_no_mysql, ignore = "ORCH_MYSQL_URL is not set")]
async fn mysql_role_is_limited() {
    let Some(harness) = orch_tests::harness::LeastPrivilegeHarness::mysql() else { return };
    orch_tests::privilege::role_is_limited(&harness).await;
}
