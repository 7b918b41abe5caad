use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn write(path: &Path, body: &str, mode: u32) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn entry(token: &str, ns: &str, sa: &str, expires: &str) -> String {
    format!(
        r#"{{"token": "{token}", "namespace": "{ns}", "serviceAccount": "{sa}", "expiresAt": "{expires}"}}"#
    )
}

fn doc(entries: &[String]) -> String {
    format!(r#"{{"tokens": [{}]}}"#, entries.join(","))
}

#[test]
fn tokens_map_to_their_service_account_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    write(
        &path,
        &doc(&[
            entry("tok-web", "shop", "web", "2999-01-01T00:00:00Z"),
            entry("tok-old", "shop", "web", "2000-01-01T00:00:00Z"),
        ]),
        0o600,
    );
    let file = TokenFile::new(path);
    assert_eq!(file.check("tok-web"), Ok(Caller::new("shop", "web")));
    assert_eq!(file.check("tok-old"), Err(AuthError::Expired));
    assert!(matches!(
        file.check("tok-nobody"),
        Err(AuthError::Refused(_))
    ));
}

#[test]
fn the_file_is_followed_as_the_sandbox_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let file = TokenFile::new(path.clone());
    assert!(
        file.check("tok-web").is_err(),
        "no file yet: nothing is valid"
    );
    write(
        &path,
        &doc(&[entry("tok-web", "shop", "web", "2999-01-01T00:00:00Z")]),
        0o600,
    );
    assert_eq!(file.check("tok-web"), Ok(Caller::new("shop", "web")));
    write(
        &path,
        &doc(&[entry("tok-api", "shop", "api", "2999-01-01T00:00:00Z")]),
        0o600,
    );
    assert!(
        file.check("tok-web").is_err(),
        "removed tokens stop working"
    );
    assert_eq!(file.check("tok-api"), Ok(Caller::new("shop", "api")));
    // A broken rewrite keeps the last good tokens.
    write(&path, "{\"tokens\": [", 0o600);
    assert_eq!(file.check("tok-api"), Ok(Caller::new("shop", "api")));
}

#[test]
fn bad_files_are_refused_with_a_reason_and_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let good = doc(&[entry("tok-secret", "shop", "web", "2999-01-01T00:00:00Z")]);
    let cases = [
        (good.clone(), 0o644, "readable by others"),
        (
            "{\"tokens\": [".to_string(),
            0o600,
            "unexpected end of file",
        ),
        (
            r#"{"tokens": [{"token": "tok-secret", "namespace": 7}]}"#.to_string(),
            0o600,
            "missing, unknown or of the wrong type",
        ),
        (
            doc(&[entry("tok-secret", "shop", "web", "yesterday")]),
            0o600,
            "wrong type",
        ),
        (
            doc(&[
                entry("tok-secret", "shop", "web", "2999-01-01T00:00:00Z"),
                entry("tok-secret", "shop", "api", "2999-01-01T00:00:00Z"),
            ]),
            0o600,
            "tokens[1]: the same token appears twice",
        ),
        (
            doc(&[entry("tok-secret", "shop", "we/b", "2999-01-01T00:00:00Z")]),
            0o600,
            "tokens[0]: namespace or serviceAccount makes no SPIFFE id",
        ),
        (
            doc(&[entry("", "shop", "web", "2999-01-01T00:00:00Z")]),
            0o600,
            "tokens[0]: empty token",
        ),
    ];
    for (body, mode, want) in cases {
        write(&path, &body, mode);
        let error = read(&path).err().expect("refused").to_string();
        assert!(error.contains(want), "{error} should say {want}");
        assert!(!error.contains("tok-secret"), "{error} quotes the token");
    }
}

#[test]
fn expiry_is_compared_to_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let soon = time::OffsetDateTime::from(SystemTime::now() + Duration::from_secs(3600))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    write(&path, &doc(&[entry("tok", "shop", "web", &soon)]), 0o600);
    assert!(TokenFile::new(path).check("tok").is_ok());
}
