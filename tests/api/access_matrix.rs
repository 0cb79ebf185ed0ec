//! Every route, GET and POST, for every kind of visitor: anonymous, a reader and an admin of
//! the subscription, and an admin of another subscription. One table; a route added to
//! `src/web` without a row here fails `every_route_in_the_code_has_a_row`.

use std::collections::BTreeSet;

use crate::support::{csrf_token, login_with, new_client, TestApp};

const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    Reader,
    Admin,
    Stranger,
}

const WHO: [Who; 4] = [Who::Anonymous, Who::Reader, Who::Admin, Who::Stranger];

/// (method, path pattern, expected status for anonymous, reader, admin, stranger).
/// `{id}` is the subscription of the reader and the admin; the stranger administers another.
const MATRIX: &[(&str, &str, [u16; 4])] = &[
    ("GET", "/healthz", [200, 200, 200, 200]),
    ("GET", "/readyz", [200, 200, 200, 200]),
    ("GET", "/", [303, 303, 303, 303]),
    ("GET", "/login", [200, 303, 303, 303]),
    // Signed-in visitors post their session's token, not the sign-in form's: refused.
    ("POST", "/login", [401, 403, 403, 403]),
    ("GET", "/setup/{token}", [404, 404, 404, 404]),
    ("POST", "/setup/{token}", [404, 403, 403, 403]),
    ("GET", "/subscriptions", [303, 200, 200, 200]),
    ("GET", "/subscriptions/{id}/events", [303, 200, 200, 404]),
    ("GET", "/subscriptions/{id}/settings", [303, 200, 200, 404]),
    ("POST", "/subscriptions/{id}/settings", [303, 403, 303, 404]),
    (
        "POST",
        "/subscriptions/{id}/settings/retry-parked",
        [303, 403, 303, 404],
    ),
    (
        "POST",
        "/subscriptions/{id}/settings/pause",
        [303, 403, 303, 404],
    ),
    (
        "POST",
        "/subscriptions/{id}/settings/resume",
        [303, 403, 303, 404],
    ),
    // Without an application key, an admin is told what to do (422).
    (
        "POST",
        "/subscriptions/{id}/settings/monitors",
        [303, 403, 422, 404],
    ),
    // An admin's empty replay window is explained (422).
    (
        "POST",
        "/subscriptions/{id}/settings/replay",
        [303, 403, 422, 404],
    ),
    // An admin is asked to confirm first (303 to the confirmation); the first destination
    // itself is never removed.
    (
        "POST",
        "/subscriptions/{id}/settings/remove",
        [303, 403, 303, 404],
    ),
    ("GET", "/subscriptions/{id}/members", [303, 403, 200, 404]),
    (
        "POST",
        "/subscriptions/{id}/members/invite",
        [303, 403, 422, 404],
    ),
    (
        "POST",
        "/subscriptions/{id}/members/role",
        [303, 403, 404, 404],
    ),
    (
        "POST",
        "/subscriptions/{id}/members/remove",
        [303, 403, 404, 404],
    ),
    (
        "POST",
        "/subscriptions/{id}/members/invites/revoke",
        [303, 403, 404, 404],
    ),
    ("GET", "/invite/{token}", [404, 404, 404, 404]),
    ("POST", "/invite/{token}", [404, 403, 403, 403]),
    ("GET", "/subscriptions/{id}/tokens", [303, 403, 200, 404]),
    ("POST", "/subscriptions/{id}/tokens", [303, 403, 422, 404]),
    (
        "POST",
        "/subscriptions/{id}/tokens/revoke",
        [303, 403, 404, 404],
    ),
    ("GET", "/account", [303, 200, 200, 200]),
    ("POST", "/account/password", [303, 422, 422, 422]),
    ("POST", "/account/tokens", [303, 422, 422, 422]),
    ("POST", "/account/tokens/revoke", [303, 404, 404, 404]),
    ("POST", "/api/v1/events", [401, 401, 401, 401]),
    // The REST API takes personal API tokens, never a browser session.
    (
        "GET",
        "/api/v1/subscriptions/{id}/siem",
        [401, 401, 401, 401],
    ),
    (
        "PUT",
        "/api/v1/subscriptions/{id}/siem",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/siem/pause",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/siem/resume",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/siem/replay",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/siem/monitors",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/siem/retry-parked",
        [401, 401, 401, 401],
    ),
    (
        "PATCH",
        "/api/v1/subscriptions/{id}/siem",
        [401, 401, 401, 401],
    ),
    (
        "GET",
        "/api/v1/subscriptions/{id}/destinations",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/destinations",
        [401, 401, 401, 401],
    ),
    (
        "GET",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}",
        [401, 401, 401, 401],
    ),
    (
        "PUT",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}",
        [401, 401, 401, 401],
    ),
    (
        "PATCH",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}",
        [401, 401, 401, 401],
    ),
    (
        "DELETE",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}/pause",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}/resume",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}/replay",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}/monitors",
        [401, 401, 401, 401],
    ),
    (
        "POST",
        "/api/v1/subscriptions/{id}/destinations/{destination_id}/retry-parked",
        [401, 401, 401, 401],
    ),
    ("GET", "/api/v1/openapi.json", [200, 200, 200, 200]),
    ("GET", "/metrics", [404, 404, 404, 404]),
    ("GET", "/no/such/page", [404, 404, 404, 404]),
    // Last: it ends the sessions the rows above use.
    ("POST", "/account/sign-out-everywhere", [303, 303, 303, 303]),
    ("POST", "/logout", [303, 303, 303, 303]),
];

#[tokio::test]
async fn every_route_answers_each_kind_of_visitor_as_the_matrix_says() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    let other = app.create_subscription("Fabrikam PKI").await;
    app.create_user("reader@example.com", PASSWORD, sub, "reader")
        .await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    app.create_user("stranger@example.com", PASSWORD, other, "admin")
        .await;
    let mut clients = Vec::new();
    for who in WHO {
        let client = new_client();
        let email = match who {
            Who::Anonymous => None,
            Who::Reader => Some("reader@example.com"),
            Who::Admin => Some("admin@example.com"),
            Who::Stranger => Some("stranger@example.com"),
        };
        if let Some(email) = email {
            assert_eq!(
                login_with(&client, &app.base_url, email, PASSWORD)
                    .await
                    .status(),
                303
            );
        }
        clients.push(client);
    }
    let mut wrong = Vec::new();
    for (method, pattern, expected) in MATRIX {
        let path = pattern
            .replace("{id}", &sub.to_string())
            .replace("{token}", "not-a-setup-token")
            .replace("{destination_id}", "1");
        for (k, who) in WHO.iter().enumerate() {
            let client = &clients[k];
            let status = match *method {
                "GET" => client
                    .get(format!("{}{path}", app.base_url))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
                "PUT" | "PATCH" => client
                    .request(
                        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                        format!("{}{path}", app.base_url),
                    )
                    .json(&serde_json::json!({"siem_enabled": false}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
                "DELETE" => client
                    .delete(format!("{}{path}", app.base_url))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
                _ => {
                    // A valid CSRF token for this visitor (the session's, or the sign-in
                    // page's once signed out), so the row tests the role check.
                    let mut csrf = String::new();
                    for page in ["/account", "/login"] {
                        let text = client
                            .get(format!("{}{page}", app.base_url))
                            .send()
                            .await
                            .unwrap()
                            .text()
                            .await
                            .unwrap();
                        if text.contains("name=\"csrf_token\"") {
                            csrf = csrf_token(&text);
                            break;
                        }
                    }
                    client
                        .post(format!("{}{path}", app.base_url))
                        .form(&[
                            ("csrf_token", csrf.as_str()),
                            ("email", "nobody@example.com"),
                            ("password", "wrong password!"),
                            ("current_password", "wrong password!"),
                            ("new_password", "another long password"),
                            ("new_password_confirm", "another long password"),
                            ("action", "save"),
                            ("provider", "datadog"),
                        ])
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }
            };
            if status != expected[k] {
                wrong.push(format!(
                    "{method} {pattern} as {who:?}: {status}, expected {}",
                    expected[k]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `(method, path)` of every `.route(…)` in `src/web`, read from the source.
fn routes_in_the_code() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    // Every `.rs` file under `src/web`, folders included.
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/web"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 10, "src/web was read: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(path).unwrap();
        for chunk in text.split(".route(").skip(1) {
            let Some(start) = chunk.find('"') else {
                continue;
            };
            let rest = &chunk[start + 1..];
            let Some(end) = rest.find('"') else { continue };
            let path = rest[..end].to_owned();
            // The handlers of this route: up to the next route or the end of the chain.
            let body = rest[end..].split(".route(").next().unwrap_or_default();
            let body = body.split("\n}").next().unwrap_or_default();
            for (token, method) in [
                ("get(", "GET"),
                ("post(", "POST"),
                ("put(", "PUT"),
                ("patch(", "PATCH"),
                ("delete(", "DELETE"),
            ] {
                if body.contains(token) {
                    routes.insert((method.to_owned(), path.clone()));
                }
            }
        }
    }
    routes
}

#[test]
fn every_route_in_the_code_has_a_row() {
    let rows: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let routes = routes_in_the_code();
    assert!(routes.len() >= 15, "the route reader found {routes:?}");
    let missing: Vec<_> = routes.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the access matrix: {missing:?}"
    );
}
