//! The moto harness the IAM join suites stand on: a real `moto_server` hands out an assumed
//! role's credentials, and STS `GetCallerIdentity` as those credentials names the role session
//! that the token's allow rules will match.

use machine_id_e2e::moto::{MOTO_DEFAULT_ACCOUNT, Moto};

const ROLE: &str = "arn:aws:iam::123456789012:role/teleport-bot-role";
const SESSION: &str = "i-0123456789abcdef0";

#[test]
fn moto_assumed_role_is_the_caller_identity() {
    let moto = Moto::start();
    assert!(
        moto.url().starts_with("http://127.0.0.1:"),
        "{}",
        moto.url()
    );

    let creds = moto.assume_role(ROLE, SESSION);
    assert!(
        creds.access_key_id.starts_with("ASIA"),
        "temporary credentials: {creds:?}"
    );
    assert!(!creds.secret_access_key.is_empty());
    assert!(!creds.session_token.is_empty());
    let shown = format!("{creds:?}");
    assert!(!shown.contains(&creds.secret_access_key), "{shown}");
    assert!(!shown.contains(&creds.session_token), "{shown}");

    let (account, arn) = moto.caller_identity(&creds.access_key_id);
    assert_eq!(account, "123456789012");
    assert_eq!(
        arn,
        "arn:aws:sts::123456789012:assumed-role/teleport-bot-role/i-0123456789abcdef0"
    );

    // An access key id moto never handed out is its default user: the identity follows the key.
    let (account, arn) = moto.caller_identity("AKIDEXAMPLE");
    assert_eq!(account, MOTO_DEFAULT_ACCOUNT);
    assert_eq!(
        arn,
        format!("arn:aws:sts::{MOTO_DEFAULT_ACCOUNT}:user/moto")
    );
}

#[test]
fn moto_assumed_role_of_another_account_is_that_account() {
    let moto = Moto::start();
    let creds = moto.assume_role("arn:aws:iam::111111111111:role/other-role", "s-1");
    let (account, arn) = moto.caller_identity(&creds.access_key_id);
    assert_eq!(account, "111111111111");
    assert_eq!(arn, "arn:aws:sts::111111111111:assumed-role/other-role/s-1");
}
