//! Bearer-token auth against the real registry: the challenge, anonymous and authenticated
//! tokens, wrong passwords, insufficient scope, and a key the registry does not trust.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use pullguard_tests::registry::RegistryProcess;
use pullguard_tests::seed::{Auth, BearerChallenge, ImageSpec, Seeder, media};
use pullguard_tests::token::{
    Grant, LIMITED_PASSWORD, LIMITED_USER, ROBOT_PASSWORD, ROBOT_USER, TokenConfig, TokenServer, decode_jwt,
};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::json;

struct Setup {
    tokens: TokenServer,
    registry: RegistryProcess,
    client: reqwest::Client,
}

impl Setup {
    /// Seeds `app:v1` and `public/base:v1` with a minted push token, so the token server
    /// has seen no request when a test starts.
    async fn start() -> (Self, String, String) {
        let tokens = TokenServer::start().await.unwrap();
        let registry = RegistryProcess::start_token_auth(&tokens).await.unwrap();
        let minted = tokens.push_token(&["app", "public/base"]).unwrap();
        let seeder = Seeder::with_auth(&registry, Auth::bearer(&minted)).unwrap();
        let app = seeder.push_image("app", "v1", &ImageSpec::linux("amd64")).await.unwrap().digest;
        let public = seeder.push_image("public/base", "v1", &ImageSpec::linux("arm64")).await.unwrap().digest;
        assert_eq!(tokens.requests(), 0);
        let client = registry.client().unwrap();
        (Self { tokens, registry, client }, app, public)
    }

    async fn get(&self, repo: &str, reference: &str, token: Option<&str>) -> reqwest::Response {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.registry.base_url());
        let mut request = self.client.get(url).header(ACCEPT, media::FULL_ACCEPT);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.send().await.unwrap()
    }

    /// Follows the registry's challenge the way a client does: token from the realm it names,
    /// for the scope it names, then the same request with the token.
    async fn pull(
        &self,
        repo: &str,
        reference: &str,
        credentials: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let first = self.get(repo, reference, None).await;
        assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
        let challenge = BearerChallenge::from_response(&first).unwrap();
        assert_eq!(challenge.realm, self.tokens.realm());
        let scope = challenge.scope.unwrap();
        let token = self
            .tokens
            .request_token(challenge.service.as_deref(), &[&scope], credentials)
            .await
            .unwrap()
            .token()
            .unwrap();
        self.get(repo, reference, Some(&token)).await
    }
}

fn www_authenticate(response: &reqwest::Response) -> String {
    response.headers().get("www-authenticate").unwrap().to_str().unwrap().to_owned()
}

#[tokio::test]
async fn anonymous_read_is_challenged_with_the_realm_service_and_pull_scope() {
    let (setup, _, _) = Setup::start().await;
    let response = setup.get("app", "v1", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer realm="{}",service="{}",scope="repository:app:pull""#,
            setup.tokens.realm(),
            setup.tokens.service()
        )
    );
    assert_eq!(setup.registry.token_service(), Some(setup.tokens.service()));
    // The registry itself never calls the token server.
    assert_eq!(setup.tokens.requests(), 0);
}

#[tokio::test]
async fn credentials_get_a_token_the_registry_accepts() {
    let (setup, app, _) = Setup::start().await;
    let response = setup.pull("app", "v1", Some((ROBOT_USER, ROBOT_PASSWORD))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["docker-content-digest"], app.as_str());
    assert_eq!(response.headers()["content-type"], media::OCI_MANIFEST);
    assert_eq!((setup.tokens.requests(), setup.tokens.requests_with_credentials()), (1, 1));
    let log = setup.tokens.request_log();
    assert_eq!(log[0].user.as_deref(), Some(ROBOT_USER));
    assert_eq!(log[0].scopes, ["repository:app:pull"]);
    assert_eq!(log[0].service.as_deref(), Some(setup.tokens.service()));
    assert_eq!(log[0].status, 200);
}

#[tokio::test]
async fn public_repositories_work_anonymously_end_to_end() {
    let (setup, _, public) = Setup::start().await;
    let response = setup.pull("public/base", "v1", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["docker-content-digest"], public.as_str());
    assert_eq!((setup.tokens.requests(), setup.tokens.requests_with_credentials()), (1, 0));
    assert_eq!(setup.tokens.request_log()[0].user, None);
}

#[tokio::test]
async fn tokens_without_the_needed_access_get_insufficient_scope() {
    let (setup, _, _) = Setup::start().await;
    // Anonymous asks for a private repository: 200 with nothing granted, like real servers.
    let anonymous = setup.tokens.fetch_token("repository:app:pull", None).await.unwrap();
    let (_, claims) = decode_jwt(&anonymous).unwrap();
    assert_eq!(claims["access"], json!([{"type": "repository", "name": "app", "actions": []}]));
    assert_eq!(claims["sub"], "");

    // Authenticated, yet not allowed: the limited user only pulls public/*.
    let limited = setup
        .tokens
        .fetch_token("repository:app:pull", Some((LIMITED_USER, LIMITED_PASSWORD)))
        .await
        .unwrap();
    // A real grant, for another repository.
    let other =
        setup.tokens.fetch_token("repository:other:pull", Some((ROBOT_USER, ROBOT_PASSWORD))).await.unwrap();

    for token in [&anonymous, &limited, &other] {
        let response = setup.get("app", "v1", Some(token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = BearerChallenge::parse(&www_authenticate(&response)).unwrap();
        assert_eq!(challenge.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(challenge.scope.as_deref(), Some("repository:app:pull"));
        assert_eq!(challenge.realm, setup.tokens.realm());
    }
    let public = setup.pull("public/base", "v1", Some((LIMITED_USER, LIMITED_PASSWORD))).await;
    assert_eq!(public.status(), StatusCode::OK);
    assert_eq!((setup.tokens.requests(), setup.tokens.requests_with_credentials()), (4, 3));
}

#[tokio::test]
async fn wrong_or_unknown_credentials_are_refused_by_the_token_server() {
    let tokens = TokenServer::start().await.unwrap();
    for (user, password) in [(ROBOT_USER, "wrong"), ("nobody", ROBOT_PASSWORD)] {
        let reply = tokens
            .request_token(Some(tokens.service()), &["repository:app:pull"], Some((user, password)))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body["errors"][0]["code"], "UNAUTHORIZED");
        assert!(reply.token().is_err());
    }
    let reply = tokens.request_token(Some("another-service"), &["repository:app:pull"], None).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!((tokens.requests(), tokens.requests_with_credentials()), (3, 2));
    let statuses: Vec<u16> = tokens.request_log().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 400]);
}

#[tokio::test]
async fn tokens_grant_only_what_was_asked_and_allowed() {
    let tokens = TokenServer::start().await.unwrap();
    let robot = tokens
        .request_token(
            Some(tokens.service()),
            &["repository:app:pull,push", "repository:public/x:pull"],
            Some((ROBOT_USER, ROBOT_PASSWORD)),
        )
        .await
        .unwrap();
    assert_eq!(robot.body["expires_in"], 300);
    assert_eq!(robot.body["access_token"], robot.body["token"]);
    assert!(robot.body["issued_at"].as_str().unwrap().ends_with('Z'));
    let (header, claims) = decode_jwt(&robot.token().unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    // Whether the registry finds the key by this kid is proven by every accepted token.
    assert_eq!(header["kid"], tokens.key_id());
    assert_eq!(claims["iss"], tokens.issuer());
    assert_eq!(claims["aud"], tokens.service());
    assert_eq!(claims["sub"], ROBOT_USER);
    assert_eq!(
        claims["access"],
        json!([
            {"type": "repository", "name": "app", "actions": ["pull", "push"]},
            {"type": "repository", "name": "public/x", "actions": ["pull"]},
        ])
    );

    let limited = tokens
        .fetch_token("repository:public/x:pull,push", Some((LIMITED_USER, LIMITED_PASSWORD)))
        .await
        .unwrap();
    let (_, claims) = decode_jwt(&limited).unwrap();
    assert_eq!(claims["access"], json!([{"type": "repository", "name": "public/x", "actions": ["pull"]}]));
}

#[tokio::test]
async fn pushing_needs_a_push_grant() {
    let tokens = TokenServer::start().await.unwrap();
    let registry = RegistryProcess::start_token_auth(&tokens).await.unwrap();

    let pull_only =
        tokens.fetch_token("repository:pushed:pull", Some((ROBOT_USER, ROBOT_PASSWORD))).await.unwrap();
    let error = Seeder::with_auth(&registry, Auth::bearer(&pull_only))
        .unwrap()
        .push_image("pushed", "v1", &ImageSpec::linux("amd64"))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains(r#"error="insufficient_scope""#), "{error:#}");
    // The registry lists the wanted actions in map order: pull,push or push,pull.
    let text = format!("{error:#}");
    assert!(
        text.contains("repository:pushed:pull,push") || text.contains("repository:pushed:push,pull"),
        "{text}"
    );

    let push =
        tokens.fetch_token("repository:pushed:pull,push", Some((ROBOT_USER, ROBOT_PASSWORD))).await.unwrap();
    let seeder = Seeder::with_auth(&registry, Auth::bearer(&push)).unwrap();
    let pushed = seeder.push_image("pushed", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let fetched = seeder.get_manifest("pushed", "v1").await.unwrap();
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.digest.as_deref(), Some(pushed.digest.as_str()));
}

#[tokio::test]
async fn tokens_from_an_untrusted_key_are_invalid() {
    let (setup, _, _) = Setup::start().await;
    // Same issuer and service, different key: only the signature can tell them apart.
    let impostor = TokenServer::start_with(TokenConfig::default()).await.unwrap();
    assert_ne!(impostor.key_id(), setup.tokens.key_id());
    let forged = impostor.issue(ROBOT_USER, &[Grant::repository("app", &["pull"])]).unwrap();
    let response = setup.get("app", "v1", Some(&forged)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = BearerChallenge::parse(&www_authenticate(&response)).unwrap();
    assert_eq!(challenge.error.as_deref(), Some("invalid_token"));

    let genuine = setup.tokens.issue(ROBOT_USER, &[Grant::repository("app", &["pull"])]).unwrap();
    assert_eq!(setup.get("app", "v1", Some(&genuine)).await.status(), StatusCode::OK);
}

/// The seeder's token dance: each challenge is answered with a token from the realm it names,
/// for the scope it names, and the token is reused until a request needs another scope.
#[tokio::test]
async fn the_seeder_follows_the_token_challenge() {
    let tokens = TokenServer::start().await.unwrap();
    let registry = RegistryProcess::start_token_auth(&tokens).await.unwrap();
    let seeder = Seeder::with_auth(&registry, Auth::token(ROBOT_USER, ROBOT_PASSWORD)).unwrap();
    let pushed = seeder.push_image("danced", "v1", &ImageSpec::linux("amd64")).await.unwrap();
    let fetched = seeder.get_manifest("danced", "v1").await.unwrap();
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.digest.as_deref(), Some(pushed.digest.as_str()));
    let log = tokens.request_log();
    assert!(!log.is_empty() && log.len() <= 3, "one token per scope change, not per request: {log:?}");
    assert!(log.iter().all(|request| request.user.as_deref() == Some(ROBOT_USER) && request.status == 200));

    let wrong = Seeder::with_auth(&registry, Auth::token(ROBOT_USER, "wrong")).unwrap();
    let error = wrong.push_image("danced", "v2", &ImageSpec::linux("amd64")).await.unwrap_err();
    assert!(format!("{error:#}").contains("401"), "{error:#}");
}
