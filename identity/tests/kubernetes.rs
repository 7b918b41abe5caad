//! The Kubernetes side against a mock API server: TokenReview
//! authentication, the CA kept in a Secret, the bundle published to a
//! ConfigMap, and two replicas starting together agreeing on one CA.

mod support;

use std::sync::Arc;
use support::kube::{MockApi, Review};
use support::{Sandbox, code, id, settings};
use tonic::Code;
use trellis_api::contract::IDENTITY_TOKEN_AUDIENCE;
use trellis_identity::auth::{AuthError, Authenticator, Caller, TokenReviewer, service_account_of};
use trellis_identity::cli::{AnchorStep, anchor_step};
use trellis_identity::server::{Parts, Server};
use trellis_identity::store::{
    BUNDLE_KEY, ConfigMapBundle, FileBundle, SecretStore, Store, StoreError,
};
use trellis_identity_client::{KeyRequest, TrustBundle};

#[tokio::test]
async fn token_review_authenticates_service_account_tokens() {
    let api = MockApi::start().await;
    api.service_account_token("tok-web", "shop", "web");
    api.token(
        "tok-old",
        Review::Invalid {
            error: "service account token has expired".into(),
        },
    );
    api.token("tok-user", Review::User("jane@example.com".into()));
    api.token(
        "tok-other-audience",
        Review::Valid {
            namespace: "shop".into(),
            service_account: "web".into(),
            audiences: vec!["https://kubernetes.default.svc".into()],
        },
    );
    let reviewer = TokenReviewer::new(api.client());

    assert_eq!(
        reviewer.authenticate("tok-web").await,
        Ok(Caller::new("shop", "web"))
    );
    assert_eq!(
        reviewer.authenticate("tok-old").await,
        Err(AuthError::Expired)
    );
    assert!(matches!(
        reviewer.authenticate("tok-user").await,
        Err(AuthError::Refused(m)) if m.contains("not a service account")
    ));
    assert!(matches!(
        reviewer.authenticate("tok-other-audience").await,
        Err(AuthError::Refused(_))
    ));
    assert!(matches!(
        reviewer.authenticate("tok-unknown").await,
        Err(AuthError::Refused(_))
    ));

    // Every review asked for the identity audience.
    let reviews: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|(_, path, _)| path.ends_with("/tokenreviews"))
        .collect();
    assert_eq!(reviews.len(), 5);
    for (method, _, body) in reviews {
        assert_eq!(method, "POST");
        assert_eq!(
            body["spec"]["audiences"],
            serde_json::json!([IDENTITY_TOKEN_AUDIENCE])
        );
    }
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable_not_unauthenticated() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let reviewer = TokenReviewer::new(kube::Client::try_from(config).unwrap());
    assert!(matches!(
        reviewer.authenticate("tok-web").await,
        Err(AuthError::Unavailable(_))
    ));
}

#[test]
fn only_service_account_usernames_make_callers() {
    assert_eq!(
        service_account_of("system:serviceaccount:shop:web"),
        Some(Caller::new("shop", "web"))
    );
    for name in [
        "jane",
        "system:serviceaccount:shop",
        "system:serviceaccount::web",
        "system:serviceaccount:shop:",
        "system:serviceaccount:shop:web:extra",
        "system:node:worker-1",
    ] {
        assert_eq!(service_account_of(name), None, "{name}");
    }
}

fn kube_parts(api: &MockApi, sandbox: &Sandbox) -> Parts {
    Parts {
        store: Box::new(SecretStore::new(
            api.client(),
            "trellis-system",
            "trellis-identity-ca",
        )),
        sinks: vec![
            Box::new(ConfigMapBundle::new(
                api.client(),
                "trellis-system",
                "trellis-trust-bundle",
            )),
            Box::new(FileBundle::new(sandbox.bundle_path())),
        ],
        auth: Arc::new(TokenReviewer::new(api.client())),
    }
}

#[tokio::test]
async fn the_ca_lives_in_a_secret_and_the_bundle_in_a_configmap() {
    let api = MockApi::start().await;
    let sandbox = Sandbox::new();
    let server = Server::start(settings(), kube_parts(&api, &sandbox))
        .await
        .unwrap();
    let anchor = server.authority().anchor().clone();

    let secret = api
        .object("trellis-system", "secrets", "trellis-identity-ca")
        .expect("the CA was persisted");
    for key in ["ca.crt", "ca.key", "issuer.crt", "issuer.key", "bundle.crt"] {
        assert!(secret["data"][key].is_string(), "secret lacks {key}");
    }
    let cm = api
        .object("trellis-system", "configmaps", "trellis-trust-bundle")
        .expect("the bundle was published");
    let pem = cm["data"][BUNDLE_KEY].as_str().unwrap();
    assert_eq!(
        TrustBundle::from_pem(pem.as_bytes()).unwrap().anchors(),
        std::slice::from_ref(&anchor)
    );
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "trellis-identity"
    );

    // A proxy authenticated by TokenReview gets its identity.
    api.service_account_token("tok-web", "shop", "web");
    let request = KeyRequest::generate(&id("shop", "web")).unwrap();
    let chain = sandbox
        .certify(&server, "tok-web", request.csr_der().to_vec())
        .await
        .unwrap();
    request
        .certificate(chain, &id("shop", "web"), &sandbox.bundle())
        .unwrap();
    api.token(
        "tok-old",
        Review::Invalid {
            error: "token has expired".into(),
        },
    );
    let csr = KeyRequest::generate(&id("shop", "web"))
        .unwrap()
        .csr_der()
        .to_vec();
    assert_eq!(
        code(&sandbox.certify(&server, "tok-old", csr).await),
        Code::Unauthenticated
    );

    // A restart (a new pod) loads the same CA from the Secret.
    server.stop().await;
    let again = Server::start(settings(), kube_parts(&api, &sandbox))
        .await
        .unwrap();
    assert_eq!(again.authority().anchor(), &anchor);
}

#[tokio::test]
async fn replicas_starting_together_agree_on_one_ca() {
    let api = MockApi::start().await;
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let (one, two) = tokio::join!(
        Server::start(settings(), kube_parts(&api, &a)),
        Server::start(settings(), kube_parts(&api, &b)),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.authority().anchor(), two.authority().anchor());
    assert_eq!(one.authority().issuer_cert(), two.authority().issuer_cert());
}

#[tokio::test]
async fn rotation_steps_update_the_secret_and_refuse_stale_writes() {
    let api = MockApi::start().await;
    let sandbox = Sandbox::new();
    let server = Server::start(settings(), kube_parts(&api, &sandbox))
        .await
        .unwrap();
    let store = SecretStore::new(api.client(), "trellis-system", "trellis-identity-ca");
    let before = store.load().await.unwrap().unwrap();

    anchor_step(&store, AnchorStep::Add, "cluster.local")
        .await
        .unwrap();
    assert!(server.reload().await.unwrap());
    let cm = api
        .object("trellis-system", "configmaps", "trellis-trust-bundle")
        .unwrap();
    let pem = cm["data"][BUNDLE_KEY].as_str().unwrap();
    assert_eq!(
        TrustBundle::from_pem(pem.as_bytes())
            .unwrap()
            .anchors()
            .len(),
        2
    );

    // A writer that read before the step must not overwrite it.
    let stale = store.replace(&before, &before).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
}

#[tokio::test]
async fn an_anchor_brought_by_the_operator_gets_an_issuer_and_is_kept() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let theirs =
        trellis_identity::ca::generate("cluster.local", std::time::SystemTime::now()).unwrap();
    let api = MockApi::start().await;
    api.put(
        "trellis-system",
        "secrets",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "trellis-identity-ca", "namespace": "trellis-system",
                         "annotations": {"helm.sh/resource-policy": "keep"}},
            "data": {"ca.crt": b64(theirs.get("ca.crt").unwrap()),
                     "ca.key": b64(theirs.get("ca.key").unwrap())},
        }),
    );
    let sandbox = Sandbox::new();
    let server = Server::start(settings(), kube_parts(&api, &sandbox))
        .await
        .unwrap();
    let anchor = TrustBundle::from_pem(theirs.get("ca.crt").unwrap()).unwrap();
    assert_eq!(server.authority().anchor(), &anchor.anchors()[0]);
    let secret = api
        .object("trellis-system", "secrets", "trellis-identity-ca")
        .unwrap();
    assert!(
        secret["data"]["issuer.crt"].is_string(),
        "the issuer was persisted"
    );
    assert_eq!(secret["data"]["ca.crt"], b64(theirs.get("ca.crt").unwrap()));
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
}
