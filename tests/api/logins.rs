//! Password guessing at `POST /v1/auth/login`: attempts are counted before
//! they are checked, so parallel floods cannot pass the limits, and a
//! stranger's flood slows strangers down without locking the owner out.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::common::{TestServer, PASSWORD};

const OWNER: &str = "owner@example.com";

/// A client whose connections come from `address` (any of 127.0.0.0/8).
fn client_from(address: &str) -> reqwest::Client {
    let ip: IpAddr = address.parse().expect("address");
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .expect("client")
}

async fn login(server: &TestServer, client: &reqwest::Client, password: &str) -> (u16, Value) {
    let resp = client
        .post(server.url("/v1/auth/login"))
        .json(&json!({"email": OWNER, "password": password}))
        .send()
        .await
        .expect("login sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn sixty_wrong_passwords_at_once_get_five_checks() {
    let server = TestServer::start().await;
    let client = client_from("127.0.0.1");
    let attempts: Vec<_> = (0..60)
        .map(|i| {
            let (server_url, client) = (server.url("/v1/auth/login"), client.clone());
            tokio::spawn(async move {
                client
                    .post(server_url)
                    .json(&json!({"email": OWNER, "password": format!("guess {i}")}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.expect("task"));
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (5, 55), "{statuses:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_from_elsewhere_slows_strangers_but_not_the_owner() {
    let server = TestServer::start().await;
    let home = client_from("127.0.0.1");
    // The owner has logged in from home before.
    assert_eq!(login(&server, &home, PASSWORD).await.0, 200);

    // One address guessing hard is stopped at five for this account...
    let attacker = client_from("127.0.0.2");
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(login(&server, &attacker, &format!("guess {i}")).await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // ...and two addresses more, three guesses each, take the account past
    // ten failures: strangers now wait between attempts.
    for n in 3..5 {
        let client = client_from(&format!("127.0.0.{n}"));
        for i in 0..3 {
            assert_eq!(login(&server, &client, &format!("guess {i}")).await.0, 401);
        }
    }
    let stranger = client_from("127.0.0.9");
    let (status, body) = login(&server, &stranger, PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_attempts");

    // The owner, from home, logs in at once with the right password.
    let (status, body) = login(&server, &home, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"]
        .as_str()
        .is_some_and(|t| t.starts_with("tls_")));
    server.stop().await;
}
