//! Marks the tests that need a server as ignored, with the reason, when `ORCH_MYSQL_URL` is
//! absent, so `cargo test` reports them skipped. Under `CI=true` they always run (and
//! fail without a server).

fn main() {
    println!("cargo::rerun-if-env-changed=ORCH_MYSQL_URL");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rustc-check-cfg=cfg(orch_no_mysql)");
    let present = std::env::var("ORCH_MYSQL_URL").is_ok_and(|v| !v.is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !present && !ci {
        println!("cargo::rustc-cfg=orch_no_mysql");
    }
}
