//! The outbound HTTP client (Stripe, provisioner): a redirect is never followed, so credentials
//! never travel to where an answer points.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_redirect_is_answered_not_followed_so_keys_stay_home() {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let elsewhere = {
        let seen = seen.clone();
        serve(Router::new().route(
            "/{*path}",
            any(move |headers: HeaderMap| async move {
                seen.lock().expect("lock").push(headers);
                "stolen"
            }),
        ))
        .await
    };
    let target = format!("{elsewhere}/collect");
    let redirecting = serve(Router::new().route(
        "/v1/events",
        any(move || async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response() }),
    ))
    .await;

    let http = shared::outbound::client(Duration::from_secs(5)).expect("client");
    let answer = http
        .get(format!("{redirecting}/v1/events"))
        .bearer_auth("sk_live_secret")
        .header("X-API-Key", "prov_secret")
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
    assert!(seen.lock().expect("lock").is_empty(), "nothing reached the redirect's target");
}
